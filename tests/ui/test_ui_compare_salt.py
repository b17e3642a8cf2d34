"""The page's two-film loader keys films under the conversation's salt: it reads the thread's salt from the
graph (or makes one, sent with the pair and then kept by the thread), so a pair loaded later in the same
conversation gives the same patient the same key, and another conversation gives them another."""

from __future__ import annotations

from graph_scripted import ScriptedVLM, classifier
from langchain_core.messages import HumanMessage

from graph import runtime
from ui import session as S


def _dicom(source, *, day: str, seed: int) -> bytes:
    from dated_dicom import dated_film, film_bytes

    return film_bytes(dated_film(source, patient="PAIR-UI-9", day=day, seed=seed))


def _load_and_send(g, state, files) -> dict:
    """Load two films on the page, send the prior's read and then a comparison, as the chat does."""
    from ui.compare_panel import K_QUEUED, PRIOR_READ, comparison_inputs, load_pair, thread_values

    load_pair(state, files, values=thread_values(state, g))
    cfg = {"configurable": {"thread_id": state[S.K_THREAD]}}
    prior, current = state[S.K_STUDY], state[K_QUEUED]["study"]
    for study, text in ((prior, PRIOR_READ), (current, "Is it worse than before?")):
        runtime(g).studies.put(study)
        inputs = {"messages": [HumanMessage(text)], "study_id": study.id}
        g.invoke({**inputs, **comparison_inputs(state, inputs)}, cfg)
    return g.get_state(cfg).values


def test_pairs_loaded_in_one_conversation_share_its_salt(make_graph, shared_data):
    g = make_graph(ScriptedVLM(), classifier({"pleural_effusion": 0.2}), router_semantic=False)
    source = shared_data / "dicom" / "CR-MONO1-10-chest.dcm"
    jan, mar, may = (_dicom(source, day=d, seed=i) for i, d in enumerate(("20260110", "20260301", "20260501")))
    state = {S.K_INBOX: [], S.K_STUDY_COUNT: 0, S.K_STUDY_LABELS: {}, S.K_STUDY: None, S.K_PENDING: None,
             S.K_THREAD: "ui-salt-1"}
    first = _load_and_send(g, state, [("b.dcm", mar), ("a.dcm", jan)])
    salt = first["patient_salt"]
    second = _load_and_send(g, state, [("c.dcm", may), ("b.dcm", mar)])  # a later film, with the last one
    assert second["patient_salt"] == salt
    keys = {k for p in second["pairs"].values() for k in (p["prior_key"], p["current_key"])}
    assert len(second["pairs"]) == 2 and len(keys) == 1 and None not in keys  # one patient, one key
    assert "PAIR-UI-9" not in str(second)
    other = dict(state, **{S.K_THREAD: "ui-salt-2", S.K_INBOX: []})
    theirs = _load_and_send(g, other, [("b.dcm", mar), ("a.dcm", jan)])
    assert theirs["patient_salt"] != salt
    assert {p["current_key"] for p in theirs["pairs"].values()}.isdisjoint(keys)
