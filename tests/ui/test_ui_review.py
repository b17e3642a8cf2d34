"""The UI's Review and sign-off panel: its table logic, the reviewer it signs as, and the panel drawn."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from agents.review import Review, Reviewer, ReviewError, ReviewIncomplete
from knowledge.evidence import Decision, Status
from ui.review import NO_ACTION, apply_rows, reviewer_for, table_rows

DECISIONS = [
    Decision(finding="pneumothorax", status=Status.present, confidence=0.9, agreeing=["vlm", "classifier"]),
    Decision(finding="cardiomegaly", status=Status.uncertain, confidence=0.5, needs_review=True, conflict=True),
]


def draft() -> Review:
    return Review.draft(thread_id="t", study_id="s" * 16, reviewer=Reviewer.typed("Ann"), decisions=DECISIONS,
                        report="Small right pneumothorax.")


class User:
    def __init__(self, logged_in: bool, **claims):
        self.is_logged_in, self.claims = logged_in, claims

    def to_dict(self):
        return {"is_logged_in": self.is_logged_in, **self.claims}


def test_rows_put_flagged_first_and_the_table_applies_only_changes():
    review = draft()
    rows = table_rows(review)
    assert [r["id"] for r in rows] == ["cardiomegaly", "pneumothorax"]
    assert rows[0]["flagged"] == "needs review" and rows[0]["action"] == NO_ACTION
    apply_rows(review, rows)  # nothing chosen: nothing recorded, the flagged one still blocks
    assert [c.what for c in review.events] == ["opened"]
    with pytest.raises(ReviewIncomplete, match="Cardiomegaly"):
        review.sign()
    rows[0]["action"], rows[1]["action"], rows[1]["note"] = "present", "reject", "skin fold"
    apply_rows(review, rows, added=["Fracture"])
    assert review.item("cardiomegaly").final_status == Status.present
    assert review.item("pneumothorax").action == "rejected" and review.item("pneumothorax").note == "skin fold"
    assert review.item("fracture").action == "added"
    n = len(review.events)
    apply_rows(review, table_rows(review))  # the table redrawn from the review: no new audit lines
    assert len(review.events) == n
    assert review.sign().items


def test_the_reviewer_is_the_login_else_a_typed_name():
    oidc = reviewer_for(User(True, sub="u1", name="Ann Lee", org="Radiology"), "ignored")
    assert oidc.authenticated and oidc.id == "u1"
    typed = reviewer_for(User(False), "Ann")
    assert not typed.authenticated and typed.label == "(unauthenticated) Ann"
    assert reviewer_for(None, " ") is None
    with pytest.raises(ReviewError):
        Reviewer.typed("")


def _panel(thread_id: str, data_dir: str, image: str) -> None:
    import sys

    sys.path.insert(0, "tests")
    from graph_scripted import ScriptedVLM, classifier

    from cxr_agent.settings import Settings
    from graph import build_graph
    from ui import session as S
    from ui.review import review_section
    from ui.turn import TurnResult

    settings = Settings(model_profile="tiny", offline=True, data_dir=data_dir, checkpointer_url="memory")
    g = build_graph(settings, tools=[ScriptedVLM(report="Small right pneumothorax."),
                                     classifier({"pneumothorax": 0.82, "cardiomegaly": 0.9})],
                    builtin_tools=False, plugins=False)
    cfg = {"configurable": {"thread_id": thread_id}}
    g.invoke({"messages": [("user", "Write a report")], "image": image}, cfg)
    import streamlit as st

    st.session_state[S.K_THREAD] = thread_id
    st.session_state[S.K_TURNS] = [TurnResult(user_text="Write a report", decisions=g.get_state(cfg).values["decisions"])]
    review_section(st.session_state, settings, g)


def test_the_panel_draws_the_table_and_asks_for_a_name_without_login(tmp_path, cxr_image):
    at = AppTest.from_function(_panel, args=("ui-rv", str(tmp_path), str(cxr_image)), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.expander[0].label == "Review and sign-off"
    assert "no login" in at.text_input[0].label
    at.text_input[0].set_value("Ann").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("(unauthenticated) Ann" in str(c.value) for c in at.caption)
    assert at.text_area[0].value == "Small right pneumothorax."
    at.text_area[0].input("Edited report.").run()
    at.text_input[0].set_value("Ann B").run()  # another rerun: the edit is still there
    assert at.text_area[0].value == "Edited report."
    at.button(key="cxr_review_save").click().run()
    assert not at.exception and any("Draft saved" in str(s.value) for s in at.success)
    from agents.review import ReviewStore

    saved = next((tmp_path / "reviews").rglob("draft-*.json"))
    assert ReviewStore(tmp_path / "reviews").load_draft("ui-rv", saved.stem[len("draft-"):]).report_text == "Edited report."
    at.button(key="cxr_review_sign").click().run()  # cardiomegaly is flagged and has no action
    assert not at.exception and any("Cardiomegaly" in str(e.value) for e in at.error)
