"""The clarifying question's buttons: one per reading under a clarifying reply, none under any other; a click
queues that reading's message as the next turn."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _page(cxr: dict) -> AppTest:
    def script(cxr: dict) -> None:
        from types import SimpleNamespace

        import streamlit as st

        from ui import session as S
        from ui.clarify import clarify_buttons

        st.session_state.setdefault(S.K_INBOX, [])
        clarify_buttons(SimpleNamespace(cxr=cxr))

    return AppTest.from_function(script, args=(cxr,), default_timeout=30).run()


def test_buttons_send_the_chosen_reading():
    from agents.replying.clarify import choices

    clarify = {"readings": [{"intent": "finding_question", "finding": "edema"},
                            {"intent": "finding_question", "phrase": "edemaa"}]}
    at = _page({"clarify": {"choices": choices(clarify)}})
    assert [b.label for b in at.button] == ["Is there edema?", "Is there 'edemaa'?"]
    at.button[1].click().run()
    assert at.session_state["cxr_inbox"] == ["Is there 'edemaa'?"]


def test_no_buttons_under_an_ordinary_reply():
    assert len(_page({"intent": "report"}).button) == 0
