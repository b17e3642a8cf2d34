"""The review panel of a study compared with a prior: a second table of change rows (finding, before, now,
change, sources, flag), acted on like findings; a flagged change blocks signing; the signed result keeps them."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _compared_thread(thread_id: str, data_dir: str):
    """A graph and a thread that read two studies and compared them (the effusion flagged: the comparing
    tool says resolved, the classifier still scores it; the heart said improved)."""
    import sys
    import threading

    sys.path.insert(0, "tests")
    import numpy as np
    from graph_scripted import classifier
    from langchain_core.messages import HumanMessage

    from cxr_agent.settings import Settings
    from graph import build_graph, runtime
    from knowledge.evidence import Evidence
    from tools.ingestion.study import Study

    class Comparer:
        name, intents, compares_priors, label = "cmp", frozenset(), True, "the comparer"

        def run(self, request):
            raise AssertionError("asked only to compare")

        def compare(self, prior, current, *, finding=None, thread_id=None, cancel: threading.Event | None = None):
            items = [{"finding": "pleural_effusion", "change": "resolved", "text": "The effusion has resolved."}]
            if finding is None:
                items.append({"finding": "cardiomegaly", "change": "improved", "text": "The heart is smaller."})
            return Evidence(tool="cmp", answer="", meta={"changes": items})

    settings = Settings(model_profile="tiny", offline=True, data_dir=data_dir, checkpointer_url="memory",
                        router_semantic=False)
    scores: dict = {}
    clf = classifier({})
    clf.result = lambda request: classifier(scores[request.study.id]).run(request)
    g = build_graph(settings, tools=[clf, Comparer()], builtin_tools=False, plugins=False)
    cfg = {"configurable": {"thread_id": thread_id}}
    for seed, s in ((51, {"pleural_effusion": 0.85}), (52, {"pleural_effusion": 0.8})):
        sid = runtime(g).studies.put(Study.from_array(np.random.default_rng(seed).random((64, 64)).astype(np.float32),
                                                      view="PA"))
        scores[sid] = s
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": sid}, cfg)
    g.invoke({"messages": [HumanMessage("Is it worse than before?")]}, cfg)
    return g, settings, cfg


def _panel(thread_id: str, data_dir: str) -> None:
    import sys

    sys.path.insert(0, "tests/ui")
    import streamlit as st
    from test_ui_review_changes import _compared_thread

    from ui import session as S
    from ui.review import review_section
    from ui.turn import TurnResult

    g, settings, cfg = _compared_thread(thread_id, data_dir)
    st.session_state[S.K_THREAD] = thread_id
    st.session_state[S.K_TURNS] = [TurnResult(user_text="Read", decisions=g.get_state(cfg).values["decisions"])]
    review_section(st.session_state, settings, g)


def test_the_panel_draws_the_change_table_and_a_flagged_change_blocks_signing(tmp_path):
    at = AppTest.from_function(_panel, args=("ui-cmp", str(tmp_path)), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.text_input[0].set_value("Ann").run()
    assert not at.exception, [e.value for e in at.exception]
    tables = [d.value for d in at.dataframe]
    assert len(tables) == 2  # the findings and, below them, the change rows
    changes = tables[1]
    assert {"finding", "before", "now", "change", "sources", "flagged", "action", "note"} <= set(changes.columns)
    assert changes.iloc[0]["finding"] == "Pleural effusion" and changes.iloc[0]["flagged"] == "needs review"
    assert any("Change since the prior study" in str(c.value) for c in at.caption)
    at.button(key="cxr_review_sign").click().run()
    assert not at.exception
    assert any("flagged change" in str(e.value) and "Pleural effusion" in str(e.value) for e in at.error)


def test_change_rows_are_listed_flagged_first_and_signed_through_the_local_reviews(tmp_path):
    from agents.review import Reviewer
    from ui.review import LocalReviews, change_table_rows, table_rows

    g, settings, cfg = _compared_thread("ui-cmp2", str(tmp_path))
    reviews = LocalReviews(g, settings, Reviewer.typed("Ann"))
    review = reviews.open("ui-cmp2")
    rows = change_table_rows(review)
    assert rows[0]["id"] == "pleural_effusion" and rows[0]["flagged"] == "needs review"
    assert (rows[0]["before"], rows[0]["now"], rows[0]["change"]) == ("present", "present", "cannot compare")
    assert "cmp" in rows[0]["sources"]
    assert {r["id"] for r in rows} >= {"pleural_effusion", "cardiomegaly"}
    edited = [{**r, "action": "stable" if r["id"] == "pleural_effusion" else "accept"} for r in rows]
    findings = [{**r, "action": "accept"} if r["flagged"] else r for r in table_rows(review)]
    reviews.save(review, findings, [], review.report_text, edited)
    again = reviews.open("ui-cmp2")  # the saved draft keeps the change actions
    assert {r["id"]: r["action"] for r in change_table_rows(again)}["pleural_effusion"] == "stable"
    signed = reviews.sign(again, table_rows(again), [], again.report_text, change_table_rows(again))
    assert {c.finding: c.final_change for c in signed.changes}["pleural_effusion"] == "stable"
