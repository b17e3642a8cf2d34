"""The app under AppTest (real tiny graph): first-load progress, message limit, store failure, the
exposure warning and the delete action."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from ui_helpers import APP, nih_png

from ui import session as S

TIMEOUT = 300


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def labels(at: AppTest) -> list[str]:
    return [e.label for e in at.get("status")]


def errors(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in at.error)


def test_first_load_shows_progress_then_never_again(app_env):
    first = run(AppTest.from_file(str(APP), default_timeout=TIMEOUT))  # app_env cleared the server caches
    assert "Assistant ready" in labels(first)
    again = run(AppTest.from_file(str(APP), default_timeout=TIMEOUT))
    assert "Assistant ready" not in labels(again)


def test_too_long_message_is_an_error_turn_and_the_conversation_survives(app_env, monkeypatch):
    monkeypatch.setenv("CXR_AGENT_MAX_MESSAGE_CHARS", "50")
    from cxr_agent.settings import get_settings

    get_settings.cache_clear()
    try:
        at = run(AppTest.from_file(str(APP), default_timeout=TIMEOUT))
        at.chat_input[0].set_value("x" * 51)
        run(at)
        assert "your message is 51 characters; the limit is 50" in errors(at)
        turns = at.session_state[S.K_TURNS]
        assert len(turns) == 1 and turns[0].error and not turns[0].reply
        run(at)  # a later rerun still shows it; nothing crashed
        assert "the limit is 50" in errors(at)
    finally:
        get_settings.cache_clear()


def test_store_failure_is_an_error_turn_not_a_fallback_to_bytes(app_env, shared_data, monkeypatch):
    from tools.ingestion.store import StudyStore

    def refuse(self, study):
        raise OSError("disk full")

    monkeypatch.setattr(StudyStore, "put", refuse)
    at = run(AppTest.from_file(str(APP), default_timeout=TIMEOUT))
    png = nih_png(shared_data)
    at.file_uploader[0].upload(png.name, png.read_bytes(), "image/png")
    run(at)
    at.chat_input[0].set_value("Write a report")
    run(at)
    assert "could not be saved (OSError), so it was not sent" in errors(at)
    assert at.session_state[S.K_PENDING] is not None  # still queued: the next message retries


@pytest.mark.parametrize(("address", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_warning_when_reachable_beyond_loopback(app_env, address, warned):
    from streamlit import config

    saved = config.get_option("server.address")
    config.set_option("server.address", address)
    try:
        at = run(AppTest.from_file(str(APP), default_timeout=TIMEOUT))
    finally:
        config.set_option("server.address", saved)
    assert ("without a login" in errors(at)) is warned


def test_delete_conversation_forgets_it_on_disk(app_env, test_data_dir):
    at = run(AppTest.from_file(str(APP), default_timeout=TIMEOUT))
    needle = "PANGOLIN-7731 write a report"
    at.chat_input[0].set_value(needle)  # no study: answered without tools, but checkpointed
    run(at)
    assert at.session_state[S.K_WORKER].wait_idle(TIMEOUT)  # the turn runs on the session's worker thread
    run(at)
    db = test_data_dir / "checkpoints.sqlite"

    def holding() -> list[str]:  # the database, its -wal and -shm
        return [f.name for f in db.parent.iterdir() if f.name.startswith(db.name) and needle.encode() in f.read_bytes()]

    assert holding()
    thread = at.session_state[S.K_THREAD]
    at.button(key="cxr_forget").click()
    run(at)
    assert at.session_state[S.K_THREAD] != thread and at.session_state[S.K_TURNS] == []
    assert holding() == []
