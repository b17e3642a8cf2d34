"""The session's turn worker and stored conversations, without Streamlit: messages queue behind a running
turn and are answered in order; Stop ends a turn with nothing kept; a stored thread is listed, reopened
and owned by one reader only."""

from __future__ import annotations

import threading

from langchain_core.messages import AIMessage, HumanMessage
from ui_helpers import ScriptedGraph, scripted_report_graph

from ui import session as S
from ui.conversations import OwnerBook, owner_id, restore, summarize
from ui.turn import TurnResult, run_turn
from ui.worker import Job, TurnWorker


class HeldRunner:
    """run_turn stand-in whose first call waits on an event, so the test decides when it ends."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.order: list[str] = []

    def __call__(self, graph, text, *, thread_id, extra_inputs, on_progress, on_token, on_work, should_stop):
        self.order.append(text)
        on_progress(f"started {text}")
        if len(self.order) == 1:
            self.started.set()
            assert self.release.wait(10)
        if should_stop():
            return TurnResult(user_text=text, stopped=True)
        return TurnResult(user_text=text, reply=f"answer to {text}")


def test_a_message_sent_during_a_turn_is_queued_and_answered_after_it():
    runner = HeldRunner()
    w = TurnWorker(graph=None, runner=runner)
    w.submit(Job("Write a report", "t1"))
    assert runner.started.wait(10)
    w.submit(Job("Where is the effusion?", "t1"))
    live, queued = w.snapshot()
    assert live is not None and live.job.prompt == "Write a report" and live.progress == ["started Write a report"]
    assert queued == ["Where is the effusion?"] and w.busy
    runner.release.set()
    assert w.wait_idle(10)
    done = [(j.prompt, r.reply) for j, r in w.take_finished()]
    assert done == [("Write a report", "answer to Write a report"),
                    ("Where is the effusion?", "answer to Where is the effusion?")]  # neither cut off, in order


def test_stop_ends_the_running_turn_at_once_and_keeps_no_answer():
    runner = HeldRunner()
    w = TurnWorker(graph=None, runner=runner)
    w.submit(Job("Write a report", "t1"))
    assert runner.started.wait(10)
    w.submit(Job("and the heart?", "t1"))
    assert w.stop()
    (job, stopped), = w.take_finished()  # shown as stopped before the graph has even unwound
    assert job.prompt == "Write a report" and stopped.stopped and not stopped.reply
    assert w.snapshot() == (None, ["and the heart?"])
    runner.release.set()
    assert w.wait_idle(10)
    assert [(j.prompt, r.reply) for j, r in w.take_finished()] == [("and the heart?", "answer to and the heart?")]


def test_run_turn_closes_the_stream_when_stopped():
    graph = scripted_report_graph()
    seen = []
    result = run_turn(graph, "Write a report", thread_id="t", on_progress=seen.append,
                      should_stop=lambda: len(seen) >= 2)
    assert result.stopped and result.reply == "" and result.error is None
    assert len(seen) == 2  # nothing after the stop was read


def test_messages_are_kept_in_order_by_the_chat_callback():
    state: dict = {}
    S.init_session(state)
    for text in ("one", "two"):
        state["cxr_chat_input"] = text
        S.submit_prompt(state, "cxr_chat_input")
    assert state[S.K_INBOX] == ["one", "two"]
    S.new_conversation(state)
    assert state[S.K_INBOX] == [] and state[S.K_STUDY_COUNT] == 0


def test_owner_book_lets_only_the_owner_open_a_thread(tmp_path):
    book = OwnerBook(tmp_path / "owners.sqlite")
    me, other = owner_id("browser", "k" * 32), owner_id("browser", "x" * 32)
    assert me != other and "k" * 32 not in me  # hashed, never the key itself
    assert book.claim("t1", me) and book.claim("t1", me)
    assert not book.claim("t1", other)  # a known id does not change hands
    assert book.owns("t1", me) and not book.owns("t1", other) and not book.owns("unknown", me)
    book.claim("t2", me)
    assert set(book.threads(me)) == {"t1", "t2"} and book.threads(other) == []
    book.drop("t1")
    assert book.threads(me) == ["t2"]
    assert OwnerBook(tmp_path / "owners.sqlite").owns("t2", me)  # kept on disk


def _stored(messages):
    return ScriptedGraph([], {"messages": messages, "study_id": "b" * 64,
                              "evidence": scripted_report_graph().values["evidence"]})


def test_a_stored_conversation_is_summarised_and_restored():
    a, b = "a" * 64, "b" * 64
    graph = _stored([
        HumanMessage("Write a report"), AIMessage("Report.", additional_kwargs={"cxr": {"study_id": a, "boxes": []}}),
        HumanMessage("and this one?"), AIMessage("Second.", additional_kwargs={"cxr": {"study_id": b}}),
        HumanMessage("stopped question"),
    ])
    (summary,) = summarize(graph, ["t1"], retention_days=0)
    assert summary.title == "Write a report" and summary.studies == 2 and summary.deletes_at is None
    found = restore(graph, "t1")
    assert [(t.user_text, t.reply, t.stopped) for t in found.turns] == [
        ("Write a report", "Report.", False), ("and this one?", "Second.", False), ("stopped question", "", True)]
    assert found.turns[0].study_id == a and found.study_id == b and found.study_count == 2
    assert found.turns[1].evidence and not found.turns[0].evidence  # the state holds the latest evidence
    assert summarize(_stored([]), ["gone"], retention_days=30) == []  # no checkpoint: not listed
