"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 (backed by the tiny
model): plain and SSE streaming completions, timeout, 5xx retries, 4xx no retry, refused."""

from __future__ import annotations

import socket
import time

import pytest
from PIL import Image

from cxr_agent.settings import Settings
from tools.base import ToolRequest
from tools.ingestion.study import Study
from tools.vlm.backends.openai_backend import OpenAIBackend
from tools.vlm.tool import VLMTool
from tools.vlm.weights import vlm_weight_status


def _settings(base: str, **kw: object) -> Settings:
    defaults = {"model_profile": "real", "vlm_backend": "openai", "openai_base_url": base,
                "openai_model": "tiny-radvlm", "openai_timeout_s": 30.0, "openai_max_retries": 2,
                "vlm_max_new_tokens": 16}
    defaults.update(kw)
    return Settings(**defaults)


def _tool(settings: Settings) -> VLMTool:
    return VLMTool(settings, backend=OpenAIBackend(settings, backoff_s=0.01))


def test_non_streaming_completion(openai_server, study: Study) -> None:
    root, state = openai_server
    n0 = len(state.requests)
    ev = _tool(_settings(root + "/v1")).run(ToolRequest(intent="report", study=study, thread_id="o1"))
    assert ev.ok, ev.error
    assert ev.report and ev.meta["backend"] == "openai" and ev.meta["model"] == "tiny-radvlm"
    assert ev.meta["new_tokens"] and ev.meta["prompt_tokens"] > 10
    path, body = state.requests[n0]
    assert path == "/v1/chat/completions" and body["stream"] is False and body["temperature"] == 0.0
    first = body["messages"][0]["content"]
    assert first[0]["type"] == "image_url" and first[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert first[1] == {"type": "text", "text": ev.meta["prompt"]}


def test_sse_streaming_and_follow_up(openai_server, study: Study) -> None:
    root, state = openai_server
    tool = _tool(_settings(root + "/v1"))
    pieces: list[str] = []
    ev = tool.run(ToolRequest(intent="finding_question", finding="pleural_effusion", study=study,
                              thread_id="o2", on_token=pieces.append))
    assert ev.ok, ev.error
    assert len(pieces) > 1 and "".join(pieces).strip() == ev.answer
    assert ev.meta["ttft_ms"] is not None and ev.meta["cache_hit"] is False
    assert state.requests[-1][1]["stream"] is True
    history = [{"role": "user", "content": "Is there an effusion?"}, {"role": "assistant", "content": ev.answer}]
    ev2 = tool.run(ToolRequest(intent="chat", text="Where?", study=study, thread_id="o2", history=history))
    assert ev2.ok and ev2.meta["cache_hit"] is True  # the encoded image is reused
    msgs = state.requests[-1][1]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and msgs[2]["content"] == "Where?"


def test_timeout_is_a_clear_failure(openai_server, study: Study) -> None:
    root, _ = openai_server
    t0 = time.perf_counter()
    ev = _tool(_settings(root + "/slow/v1", openai_timeout_s=0.3)).run(ToolRequest(intent="report", study=study))
    assert not ev.ok and "did not answer within 0.3 s" in ev.error and "OPENAI_TIMEOUT_S" in ev.error
    assert time.perf_counter() - t0 < 1.4  # no retry of a read timeout


def test_server_error_is_retried_then_fails_clearly(openai_server, study: Study) -> None:
    root, state = openai_server
    n0 = len(state.requests)
    ev = _tool(_settings(root + "/fail/v1", openai_max_retries=2)).run(ToolRequest(intent="report", study=study))
    assert not ev.ok
    assert "failed after 3 attempts" in ev.error and "HTTP 500" in ev.error and root in ev.error
    assert sum(1 for p, _ in state.requests[n0:] if p.startswith("/fail/")) == 3


def test_client_error_is_not_retried(openai_server, study: Study) -> None:
    root, state = openai_server
    n0 = len(state.requests)
    ev = _tool(_settings(root + "/bad/v1")).run(ToolRequest(intent="report", study=study))
    assert not ev.ok and "HTTP 400" in ev.error
    assert len(state.requests) - n0 == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_names_the_url(study: Study) -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    ev = _tool(_settings(url, openai_max_retries=1)).run(ToolRequest(intent="report", study=study))
    assert not ev.ok and url in ev.error and "not answering" in ev.error
    st = vlm_weight_status(_settings(url))
    assert not st.present and st.location == url and "not answering" in st.detail and st.fix


def test_weight_status_sees_the_server(openai_server) -> None:
    root, _ = openai_server
    assert vlm_weight_status(_settings(root + "/v1")).present
    st = vlm_weight_status(_settings(root + "/v1", openai_model="other"))
    assert not st.present and "tiny-radvlm" in st.fix


@pytest.mark.parametrize("stream", [False, True])
def test_backend_returns_usage(openai_server, stream: bool) -> None:
    from PIL import Image

    from tools.vlm.prompts import ChatTurn

    root, _ = openai_server
    backend = OpenAIBackend(_settings(root + "/v1"), backoff_s=0.01)
    res = backend.generate(Image.new("RGB", (40, 30), 50), [ChatTurn("user", "Hi")], max_new_tokens=6,
                           min_new_tokens=6, on_token=(lambda _p: None) if stream else None)
    assert res.text and res.latency_s > 0
    if not stream:
        assert res.new_tokens == 6


def test_reasks_go_out_concurrently_and_parse_like_serial(openai_server, study: Study) -> None:
    """Re-asks over an OpenAI-compatible server are concurrent requests (each /slow/ answer takes
    1.5 s: all three are in flight before the first returns) and parse like one-by-one asks."""
    root, state = openai_server
    tool = _tool(_settings(root + "/slow/v1"))
    findings = ["pleural_effusion", "pneumothorax", "edema"]
    n0 = len(state.requests)
    batched = tool.verify(study, findings, thread_id="ov")
    arrivals = state.arrivals[n0:n0 + 3]
    assert all(e.ok for e in batched), [e.error for e in batched]
    assert max(arrivals) - min(arrivals) < 1.5  # the third arrived before the first could be answered
    asked = [b["messages"][0]["content"][1]["text"] for _, b in state.requests[n0:n0 + 3]]
    assert sorted(asked) == sorted(f"Is there any {f.replace('_', ' ')}?" for f in findings)
    fast = _tool(_settings(root + "/v1"))
    serial = [fast.verify(study, [f], thread_id="os")[0] for f in findings]
    assert [[(c.finding, c.status, c.box) for c in e.calls] for e in batched] == \
        [[(c.finding, c.status, c.box) for c in e.calls] for e in serial]


def test_cancel_stops_a_streamed_answer(openai_server, study: Study) -> None:
    import threading

    from tools.vlm.backends.base import BackendError
    from tools.vlm.prompts import ChatTurn

    root, _ = openai_server
    backend = OpenAIBackend(_settings(root + "/v1", vlm_max_new_tokens=64), backoff_s=0.01)
    cancel = threading.Event()
    pieces: list[str] = []

    def sink(piece: str) -> None:
        pieces.append(piece)
        cancel.set()  # cancel after the first token

    with pytest.raises(BackendError, match="cancelled"):
        backend.generate(Image.new("RGB", (40, 40)), [ChatTurn("user", "Hi")], max_new_tokens=64, min_new_tokens=64,
                         on_token=sink, cancel=cancel)
    assert len(pieces) < 64
    with pytest.raises(BackendError, match="cancelled before"):
        backend.generate(Image.new("RGB", (40, 40)), [ChatTurn("user", "Hi")], cancel=cancel)
    # The server finishes its side of the dropped stream first (one model lock): leave no thread mid-generate.
    assert backend.generate(Image.new("RGB", (40, 40)), [ChatTurn("user", "Hi")], max_new_tokens=2).text is not None
