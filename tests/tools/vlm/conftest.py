"""Fixtures for the VLM tests: the tiny random LLaVA-OneVision (built once per session), a
study, and a real OpenAI-compatible HTTP server on 127.0.0.1 backed by the tiny model."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from chat_http import ChatHandler, serving
from PIL import Image

from cxr_agent.settings import Settings
from tools.ingestion.study import Study
from tools.vlm.backends.transformers_backend import TransformersBackend
from tools.vlm.prompts import ChatTurn


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The tiny model's tensors are too small to parallelise; on a shared, loaded 2-core box a
    2-thread OpenMP team is 10-20x slower than one thread (measured). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_settings(test_data_dir: Path) -> Settings:
    return Settings(model_profile="tiny", data_dir=test_data_dir, vlm_device="cpu", vlm_max_new_tokens=24)


@pytest.fixture(scope="session")
def tiny_backend(tiny_settings: Settings) -> TransformersBackend:
    backend = TransformersBackend(tiny_settings)
    backend.load()
    return backend


def make_study(width: int = 96, height: int = 64, seed: int = 0) -> Study:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = (xx / width * 0.5 + yy / height * 0.3 + rng.random((height, width)) * 0.2).astype(np.float32)
    return Study.from_array(pixels, view="PA")


@pytest.fixture()
def study() -> Study:
    return make_study()


class ServerState:
    def __init__(self, backend: TransformersBackend) -> None:
        self.backend = backend
        self.requests: list[tuple[str, dict]] = []
        self.arrivals: list[float] = []  # perf_counter() at each POST's arrival
        self.lock = threading.Lock()


def _turns_and_image(body: dict) -> tuple[list[ChatTurn], Image.Image]:
    turns: list[ChatTurn] = []
    image: Image.Image | None = None
    for msg in body["messages"]:
        content = msg["content"]
        if isinstance(content, str):
            turns.append(ChatTurn(msg["role"], content))
            continue
        text = ""
        for part in content:
            if part["type"] == "text":
                text += part["text"]
            elif part["type"] == "image_url":
                url = part["image_url"]["url"]
                assert url.startswith("data:image/png;base64,")
                image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
        turns.append(ChatTurn(msg["role"], text))
    assert image is not None, "no image in the request"
    return turns, image


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(ChatHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.endswith("/models"):
                self._json(200, {"object": "list", "data": [{"id": "tiny-radvlm", "object": "model"}]})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append((self.path, body))
                state.arrivals.append(time.perf_counter())
            if self.path.startswith("/fail/"):
                self._json(500, {"error": {"message": "internal error (test)"}})
                return
            if self.path.startswith("/bad/"):
                self._json(400, {"error": {"message": "bad request (test)"}})
                return
            if self.path.startswith("/slow/"):
                time.sleep(1.5)
            if not self.path.endswith("/chat/completions"):
                self._json(404, {"error": "not found"})
                return
            turns, image = _turns_and_image(body)
            kwargs = {"max_new_tokens": body.get("max_tokens"), "min_new_tokens": body.get("min_tokens")}
            if not body.get("stream"):
                res = state.backend.generate(image, turns, **kwargs)
                self._json(200, {
                    "id": "cmpl-test", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": res.text},
                                 "finish_reason": "length" if res.truncated else "stop"}],
                    "usage": {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.new_tokens},
                })
                return
            send = self._stream()
            res = state.backend.generate(image, turns, **kwargs, on_token=lambda piece: self._piece(send, piece))
            self._end_stream(send, "length" if res.truncated else "stop")

    return Handler


@pytest.fixture(scope="session")
def openai_server(tiny_backend: TransformersBackend) -> Iterator[tuple[str, ServerState]]:
    """(root URL, state) of a chat-completions server on 127.0.0.1 backed by the tiny model.
    Paths: /v1 normal, /slow/v1 answers after 1.5 s, /fail/v1 always 500, /bad/v1 always 400."""
    state = ServerState(tiny_backend)
    with serving(_handler(state)) as root:  # clients that time out on /slow/ close early: expected
        yield root, state
