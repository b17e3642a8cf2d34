"""What a graph reads when its input is not to be trusted: a served graph reads no image whatever writes
its ``image`` channel; in-process, a path is read only if it is a regular file, with a bounded read; a
refused over-long message is not kept; a chat turn's history is bounded in characters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from graph_scripted import ScriptedVLM, classifier
from langgraph.types import Command, Send

from tools.ingestion.intake import ImageInputRefused, Studies, read_image_file
from tools.ingestion.loader import load_study

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(settings):
    """The graph as LangGraph Server builds it (server_input=True), with an in-memory checkpointer."""
    from langgraph.checkpoint.memory import InMemorySaver

    from graph import build_graph

    vlm, clf = ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.8})
    g = build_graph(settings.model_copy(update={"router_semantic": False}), tools=[vlm, clf], builtin_tools=False,
                    plugins=False, checkpointer=InMemorySaver(), server_input=True)
    return g, vlm


def _reads(monkeypatch) -> list:
    """Every source the ingestion loader is asked to decode (the real loader still runs)."""
    import tools.ingestion.loader as loader

    seen: list = []
    real = loader.load_study
    monkeypatch.setattr(loader, "load_study", lambda source, **kw: seen.append(source) or real(source, **kw))
    return seen


def test_a_served_graph_reads_no_image_whatever_writes_the_channel(served, thread, cxr_image, monkeypatch):
    from graph import runtime

    g, vlm = served
    seen = _reads(monkeypatch)
    cfg = thread()
    sid = runtime(g).studies.put(load_study(cxr_image))  # as the upload route stores it
    seen.clear()
    first = g.invoke({"messages": [("user", "Is there cardiomegaly?")], "study_id": sid}, cfg)
    assert first["study_id"] == sid and vlm.calls == 1

    # a run's command writing the image channel and jumping to ingest
    out = g.invoke(Command(update={"image": str(cxr_image), "messages": [("user", "Write a report")]},
                           goto="ingest"), cfg)
    assert "takes images only as uploads" in out["messages"][-1].content
    assert out["study_id"] == sid and vlm.calls == 1  # the previous study stays; nothing ran
    # a Send straight to ingest carrying the image
    sent = g.invoke(Command(goto=Send("ingest", {"image": str(cxr_image),
                                                 "messages": [("user", "Write a report")]})), cfg)
    assert "takes images only as uploads" in sent["messages"][-1].content and sent["study_id"] == sid
    # a state update writing the channel, then an ordinary turn
    g.update_state(cfg, {"image": "/etc/hostname"}, as_node="respond")
    again = g.invoke({"messages": [("user", "Is there cardiomegaly?")]}, cfg)
    assert again["study_id"] == sid
    assert seen == []  # no path (nor bytes) reached a decoder
    with pytest.raises(ImageInputRefused):
        runtime(g).studies.ingest(b"\x89PNG")


def test_in_process_paths_must_be_regular_files(tmp_path, cxr_image, settings):
    studies = Studies(settings)
    assert studies.ingest(str(cxr_image))[0]  # a regular file is read as before
    for path, why in ((tmp_path, "not a regular file"), ("/dev/null", "not a regular file"),
                      (tmp_path / "missing.png", "does not exist")):
        with pytest.raises(Exception, match=why) as info:
            studies.ingest(str(path))
        assert str(tmp_path) not in str(info.value)  # a refusal never quotes the path
    big = tmp_path / "big.dcm"
    big.write_bytes(b"\0" * 2048)
    with pytest.raises(Exception, match="not read"):
        read_image_file(big, limit=1024)


PROBE = textwrap.dedent("""
    import os, resource, sys, time
    sys.path.insert(0, {repo!r})
    from cxr_agent.settings import Settings
    from tools.ingestion.intake import Studies
    from tools.ingestion.study import StudyError
    studies = Studies(Settings(model_profile="tiny", offline=True, data_dir={data!r}, decode_concurrency=1))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for path in sys.argv[1:]:
        t0 = time.process_time()
        try:
            studies.ingest(path)
            print("READ", path)
        except StudyError as exc:
            print("REFUSED", type(exc).__name__, exc)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print("PEAK_GROWTH_KB", grown)
""")


def test_a_device_or_fifo_path_is_refused_without_reading_or_blocking(tmp_path):
    """/dev/zero would be read until memory runs out, a FIFO would block the open and a decode slot:
    the probe runs in a child process, bounded in time (timeout) and asserted on its peak memory."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    script = tmp_path / "probe.py"
    script.write_text(PROBE.format(repo=str(REPO), data=str(tmp_path / "data")))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(script), "/dev/zero", str(fifo), str(fifo)], capture_output=True,
                         text=True, timeout=60, env=env,
                         preexec_fn=lambda: __import__("resource").setrlimit(
                             __import__("resource").RLIMIT_AS, (3 * 2**30, 3 * 2**30)))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[:3]] == ["REFUSED"] * 3, out.stdout
    assert all("not a regular file" in ln for ln in lines[:3])
    assert int(lines[-1].split()[1]) < 64 * 1024  # peak memory grew by < 64 MB


def test_a_refused_overlong_message_is_not_kept(make_graph, thread):
    vlm = ScriptedVLM()
    g = make_graph(vlm, max_message_chars=50, router_semantic=False)
    cfg = thread()
    g.invoke({"messages": [("user", "hello")]}, cfg)
    long = "secret " * 40
    out = g.invoke({"messages": [("user", long)]}, cfg)
    assert "the limit is 50" in out["messages"][-1].content
    assert all(long not in str(m.content) for m in g.get_state(cfg).values["messages"])
    nxt = g.invoke({"messages": [("user", "and now?")]}, cfg)
    assert vlm.requests[-1].history and all(long not in h["content"] for h in vlm.requests[-1].history)
    assert len(nxt["messages"]) == 5  # hello, reply, refusal, and now?, reply


def test_chat_history_is_bounded_in_characters(make_graph, thread):
    vlm = ScriptedVLM(answer="A" * 3000)
    g = make_graph(vlm, chat_history_chars=5000, router_semantic=False)
    cfg = thread()
    for i in range(4):
        g.invoke({"messages": [("user", f"question {i}")]}, cfg)
    history = vlm.requests[-1].history
    assert 4000 < sum(len(h["content"]) for h in history) <= 5000
    assert history[-1] == {"role": "assistant", "content": history[-1]["content"]}
    assert history[-2] == {"role": "user", "content": "question 2"}  # the newest kept whole
    assert history[0]["content"].startswith("…")  # the oldest that fits in part is cut at its start
    quiet = ScriptedVLM()
    g0, cfg0 = make_graph(quiet, chat_history_chars=0, router_semantic=False), thread()
    g0.invoke({"messages": [("user", "one")]}, cfg0)
    g0.invoke({"messages": [("user", "two")]}, cfg0)
    assert quiet.requests[-1].history == []  # 0: no history at all
