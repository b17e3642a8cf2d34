"""Comparing two films over the OpenAI-compatible backend, against a real HTTP server on 127.0.0.1: one user
turn holding the prior's and the current film's PNGs (in that order) and the adapter's comparison text, as
MedGemma 1.5's longitudinal form has it. The server's /v1 runs the tiny random Gemma 3 (MedGemma 1.5's
architecture, Gemma 3's processor expanding both images, as vLLM does); /scripted/v1 answers set text, so the
client's reading of an answer (change statements, truncation) is checked on words that mean something."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np
import pytest
from chat_http import ChatHandler, serving
from graph_scripted import classifier
from langchain_core.messages import HumanMessage
from PIL import Image

from cxr_agent.settings import Settings
from tools.ingestion.study import Study
from tools.vlm.adapters.medgemma import COMPARE, COMPARE_FINDING
from tools.vlm.backends import openai_backend
from tools.vlm.backends.openai_backend import OpenAIBackend
from tools.vlm.backends.transformers_backend import TransformersBackend
from tools.vlm.comparing import compare_with_prior
from tools.vlm.tool import VLMTool

MAX_NEW = 6
WORSE = "The left pleural effusion has increased."


class Server:
    """What the test server saw, and what its /scripted/ path answers: ``script(n_images) -> (text, finish)``."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.backend = backend
        self.requests: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.script: Callable[[int], tuple[str, str]] = lambda n: (WORSE, "stop")

    def bodies(self, path_prefix: str) -> list[dict]:
        with self.lock:
            return [b for p, b in self.requests if p.startswith(path_prefix)]


def _images_of(body: dict) -> list[Image.Image]:
    out = []
    for msg in body["messages"]:
        if isinstance(msg["content"], list):
            for part in msg["content"]:
                if part["type"] == "image_url":
                    url = part["image_url"]["url"]
                    assert url.startswith("data:image/png;base64,")
                    out.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
    return out


def _hf_messages(body: dict) -> list[dict]:
    """The request back in the transformers chat form (a server's job: vLLM does the same)."""
    images = iter(_images_of(body))
    msgs = []
    for msg in body["messages"]:
        content = msg["content"]
        if isinstance(content, list):
            content = [{"type": "image", "image": next(images)} if p["type"] == "image_url"
                       else {"type": "text", "text": p["text"]} for p in content]
        msgs.append({"role": msg["role"], "content": content})
    return msgs


def _tiny_answer(backend: TransformersBackend, body: dict) -> tuple[list[str], bool]:
    """Greedy pieces of the tiny Gemma 3's answer (one per token) and whether it stopped at max_tokens."""
    import torch

    from tools.vlm.backends import hf_models

    model, processor = backend.load()
    inputs = processor.apply_chat_template(_hf_messages(body), add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt").to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    max_new = int(body["max_tokens"])
    with backend._gen_lock, torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new, do_sample=False)
    new_ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    count, ended = hf_models.answer_length(new_ids, hf_models.eos_ids(model))
    pieces, said = [], ""
    for i in range(1, count + 1):
        text = processor.tokenizer.decode(new_ids[:i], skip_special_tokens=True)
        pieces.append(text[len(said):])
        said = text
    return pieces, (not ended and count >= max_new)


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(ChatHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append((self.path, body))
            if self.path.startswith("/fail/"):
                self._json(500, {"error": {"message": "internal error (test)"}})
                return
            if self.path.startswith("/bad/"):  # vLLM's answer when --limit-mm-per-prompt allows one image
                self._json(400, {"error": {"message": "At most 1 image(s) may be provided in one request."}})
                return
            if self.path.startswith("/scripted/"):
                text, finish = state.script(len(_images_of(body)))
                pieces = [w + " " for w in text.split(" ")]
            else:
                pieces, cut = _tiny_answer(state.backend, body)
                finish = "length" if cut else "stop"
            if not body.get("stream"):
                self._json(200, {"object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": finish,
                                              "message": {"role": "assistant", "content": "".join(pieces)}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": len(pieces)}})
                return
            send = self._stream()
            for piece in pieces:
                self._piece(send, piece)
            self._end_stream(send, finish)

    return Handler


@pytest.fixture(scope="module")
def mg15_local(test_data_dir) -> tuple[Settings, TransformersBackend]:
    """The tiny Gemma 3 (the process's one memoised copy, shared with the other MedGemma 1.5 tests)."""
    settings = Settings(model_profile="tiny", data_dir=test_data_dir, vlm_device="cpu", vlm_max_new_tokens=MAX_NEW,
                        vlm_family="medgemma15")
    backend = TransformersBackend(settings)
    backend.load()
    return settings, backend


@pytest.fixture(scope="module")
def server(mg15_local) -> Iterator[tuple[str, Server]]:
    state = Server(mg15_local[1])
    with serving(_handler(state)) as root:
        yield root, state


def _tool(base: str, family: str = "medgemma15", **kw: Any) -> VLMTool:
    settings = Settings(model_profile="real", vlm_backend="openai", openai_base_url=base, openai_model="tiny-mg15",
                        openai_timeout_s=30.0, openai_max_retries=1, vlm_max_new_tokens=MAX_NEW, vlm_family=family,
                        **kw)
    return VLMTool(settings, backend=OpenAIBackend(settings, backoff_s=0.01))


def _pair(seed: int = 5) -> tuple[Study, Study]:
    rng = np.random.default_rng(seed)
    return (Study.from_array(rng.random((64, 96)).astype(np.float32), view="PA"),
            Study.from_array(rng.random((80, 72)).astype(np.float32), view="PA"))


def _user_parts(body: dict) -> list[str]:
    assert [m["role"] for m in body["messages"]] == ["user"]  # one fresh user turn, no system turn, no history
    return [p["type"] for p in body["messages"][0]["content"]]


def test_one_user_turn_holds_the_prior_then_the_current_film_then_the_comparison_text(server, mg15_local) -> None:
    base, state = server
    tool = _tool(base + "/v1")
    prior, current = _pair()
    before = len(state.bodies("/v1"))
    ev = compare_with_prior(tool, prior, current)
    body = state.bodies("/v1")[before]
    assert _user_parts(body) == ["image_url", "image_url", "text"]
    assert body["messages"][0]["content"][2]["text"] == COMPARE
    prior_png, current_png = _images_of(body)
    assert np.array_equal(np.asarray(prior_png), np.asarray(tool.model_image(prior).image))
    assert np.array_equal(np.asarray(current_png), np.asarray(tool.model_image(current).image))
    assert prior_png.size == prior_png.size[::-1]  # MedGemma 1.5's films are padded square, as the local path pads
    assert body["max_tokens"] == MAX_NEW and body["stream"] is False
    assert ev.ok and ev.meta["task"] == "comparison" and ev.meta["prior_study_id"] == prior.id
    assert ev.meta["backend"] == "openai" and ev.meta["compares_priors"] is True and ev.meta["fixed_prompt"]
    assert isinstance(ev.meta["changes"], list) and ev.calls == []
    # the local transformers path sends the same prompt to the same model: the same answer and provenance
    local = compare_with_prior(VLMTool(mg15_local[0], backend=mg15_local[1]), prior, current)
    assert local.ok and (ev.answer, ev.truncated) == (local.answer, local.truncated)
    assert ev.meta["prompt_id"] == local.meta["prompt_id"]


def test_a_streamed_comparison_gives_the_same_answer_piece_by_piece(server) -> None:
    base, state = server
    tool = _tool(base + "/v1")
    prior, current = _pair(6)
    plain = compare_with_prior(tool, prior, current)
    pieces: list[str] = []
    streamed = compare_with_prior(tool, prior, current, on_token=pieces.append)
    assert state.bodies("/v1")[-1]["stream"] is True
    assert streamed.ok and streamed.answer == plain.answer and streamed.truncated == plain.truncated
    assert len(pieces) > 1 and "".join(pieces).strip() == streamed.answer


@pytest.mark.parametrize("stream", [False, True])
def test_a_scripted_answer_is_read_into_change_statements_and_a_cut_off_one_is_truncated(server, stream) -> None:
    base, state = server
    tool = _tool(base + "/scripted/v1")
    prior, current = _pair(7)
    sink: list[str] = []
    on_token = sink.append if stream else None
    state.script = lambda n: (WORSE, "stop")
    ev = compare_with_prior(tool, prior, current, on_token=on_token)
    assert ev.ok and not ev.truncated and ev.answer == WORSE
    assert [(c["finding"], c["change"], c["text"]) for c in ev.meta["changes"]] == [("pleural_effusion", "worse", WORSE)]
    state.script = lambda n: ("The left pleural effusion has", "length")
    cut = compare_with_prior(tool, prior, current, on_token=on_token)
    assert cut.ok and cut.truncated and cut.answer == "The left pleural effusion has"
    assert state.bodies("/scripted/")[-1]["stream"] is stream


def test_a_reask_about_one_finding_sends_the_same_form_with_its_question(server) -> None:
    base, state = server
    tool = _tool(base + "/scripted/v1")
    prior, current = _pair(8)
    state.script = lambda n: ("The pleural effusion is smaller. The cardiomegaly has increased.", "stop")
    ev = compare_with_prior(tool, prior, current, finding="pleural_effusion")
    body = state.bodies("/scripted/")[-1]
    assert _user_parts(body) == ["image_url", "image_url", "text"]
    assert body["messages"][0]["content"][2]["text"] == COMPARE_FINDING.format("pleural effusion")
    assert ev.ok and ev.meta["finding"] == "pleural_effusion"
    assert [(c["finding"], c["change"]) for c in ev.meta["changes"]] == [("pleural_effusion", "improved")]


def test_each_film_is_encoded_once_and_reused_by_later_comparisons(server, monkeypatch) -> None:
    base, state = server
    state.script = lambda n: (WORSE, "stop")
    encoded: list[tuple[int, int]] = []
    real = openai_backend.image_data_url

    def counting(image: Image.Image) -> str:
        encoded.append(image.size)
        return real(image)

    monkeypatch.setattr(openai_backend, "image_data_url", counting)
    tool = _tool(base + "/scripted/v1")
    prior, current = _pair(9)
    first = compare_with_prior(tool, prior, current)
    again = compare_with_prior(tool, prior, current, finding="pleural_effusion")
    assert len(encoded) == 2 and first.meta["cache_hit"] is False and again.meta["cache_hit"] is True
    assert _images_of(state.bodies("/scripted/")[-1])[0].size == tool.model_image(prior).image.size


def test_a_server_error_is_a_failed_evidence_naming_it(server) -> None:
    base, state = server
    tool = _tool(base + "/fail/v1")
    prior, current = _pair(10)
    before = len(state.bodies("/fail/"))
    ev = compare_with_prior(tool, prior, current)
    assert not ev.ok and "HTTP 500" in ev.error and "internal error (test)" in ev.error and "2 attempts" in ev.error
    assert len(state.bodies("/fail/")) - before == 2  # retried once (openai_max_retries=1), then reported
    refused = compare_with_prior(_tool(base + "/bad/v1"), prior, current)
    assert not refused.ok and "HTTP 400" in refused.error and "At most 1 image(s)" in refused.error
    assert "2 images" in refused.error and "--limit-mm-per-prompt" in refused.error


def test_a_cancelled_comparison_sends_nothing(server) -> None:
    base, state = server
    before = len(state.requests)
    stop = threading.Event()
    stop.set()
    ev = compare_with_prior(_tool(base + "/scripted/v1"), *_pair(11), cancel=stop)
    assert not ev.ok and "cancelled" in ev.error and len(state.requests) == before


@pytest.mark.parametrize("family", ["medgemma", "radvlm"])
def test_a_family_that_does_not_compare_sends_no_request(server, family) -> None:
    base, state = server
    before = len(state.requests)
    ev = compare_with_prior(_tool(base + "/v1", family=family), *_pair(12))
    assert ev.ok and ev.meta["compares_priors"] is False and "cannot compare two films" in ev.answer
    assert len(state.requests) == before


def test_a_backend_that_sends_one_image_per_conversation_is_refused(mg15_local) -> None:
    class OneImage:
        name = "single"

        def generate(self, *args: object, **kw: object) -> None:
            raise AssertionError("not asked")

    ev = compare_with_prior(VLMTool(mg15_local[0], backend=OneImage()), *_pair(13))  # type: ignore[arg-type]
    assert not ev.ok and "the single backend sends one image per conversation" in ev.error


def test_image_keys_must_match_the_images(server) -> None:
    base, _ = server
    backend = OpenAIBackend(_tool(base + "/scripted/v1").settings)
    image = Image.new("RGB", (8, 8))
    msgs = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "image", "image": image},
                                         {"type": "text", "text": "x"}]}]
    with pytest.raises(ValueError, match="image_keys has 1 keys for 2 images"):
        backend.generate_images(msgs, image_keys=["a"])
    with pytest.raises(ValueError, match="image part 1 holds str"):
        backend.generate_images([{"role": "user", "content": [{"type": "image", "image": "x.png"}]}])


def test_a_comparison_turn_through_the_graph_reads_both_films_over_http(server, make_graph, thread) -> None:
    from graph import runtime

    base, state = server
    state.script = lambda n: (WORSE if n == 2 else "Small left pleural effusion.", "stop")
    vlm = _tool(base + "/scripted/v1")
    scores: dict[str, dict[str, float]] = {}
    clf = classifier({})
    clf.result = lambda request: classifier(scores[request.study.id]).run(request)
    g = make_graph(vlm, clf, router_semantic=False)
    cfg = thread()
    prior, current = _pair(14)
    for study, s in ((prior, 0.8), (current, 0.9)):
        sid = runtime(g).studies.put(study)
        scores[sid] = {"pleural_effusion": s}
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": sid}, cfg)
    before = len(state.bodies("/scripted/"))
    out = g.invoke({"messages": [HumanMessage("Is it worse than before?")]}, cfg)
    two = [b for b in state.bodies("/scripted/")[before:] if len(_images_of(b)) == 2]
    assert len(two) == 1  # one fresh two-film prompt for the pair
    assert np.array_equal(np.asarray(_images_of(two[0])[0]), np.asarray(vlm.model_image(prior).image))
    read = next(e for e in out["evidence"] if e.meta.get("task") == "comparison")
    assert read.tool == "vlm" and read.meta["backend"] == "openai" and read.meta["prior_study_id"] == prior.id
    rows = {d["finding"]: d for d in out["messages"][-1].additional_kwargs["cxr"]["comparison"]["changes"]}
    assert rows["pleural_effusion"]["change"] == "worse" and "vlm" in rows["pleural_effusion"]["agreeing"]


def test_a_comparison_turn_streams_the_comparing_answer_to_the_user(server, make_graph, thread) -> None:
    from graph import runtime

    base, state = server
    state.script = lambda n: (WORSE if n == 2 else "Small left pleural effusion.", "stop")
    vlm = _tool(base + "/scripted/v1")
    g = make_graph(vlm, classifier({"pleural_effusion": 0.85}), router_semantic=False)
    cfg = thread()
    prior, current = _pair(15)
    for study in (prior, current):
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": runtime(g).studies.put(study)}, cfg)
    events = [e for e in g.stream({"messages": [HumanMessage("Is it worse than before?")]}, cfg, stream_mode="custom")]
    starts = [i for i, e in enumerate(events) if e.get("event") == "tool_start" and e.get("purpose") == "compare"]
    ends = [i for i, e in enumerate(events) if e.get("event") == "tool_end" and e.get("purpose") == "compare"]
    assert starts and ends
    between = [e for e in events[starts[0]:ends[0]] if e.get("event") == "token"]
    assert len(between) > 1 and {e["tool"] for e in between} == {"vlm"}
    assert "".join(e["text"] for e in between).strip() == WORSE.strip()
