"""The prior control's choices and input, and which comparison the side-by-side view shows."""

from __future__ import annotations

from types import SimpleNamespace

from ui import session as S
from ui.compare_panel import K_PRIOR, latest_comparison, prior_input, prior_options
from ui.turn import TurnResult


def _state(current: str, chosen: str | None) -> dict:
    return {S.K_STUDY: SimpleNamespace(id=current), K_PRIOR: chosen,
            S.K_STUDY_LABELS: {"a": "Study 1 · PA", "b": "Study 2 · AP", "c": "Study 3"}}


def test_the_prior_is_another_study_of_the_conversation():
    assert prior_options(_state("b", None)) == {"a": "Study 1 · PA", "c": "Study 3"}
    assert prior_input(_state("b", "a")) == {"prior_study_id": "a"}
    assert prior_input(_state("b", None)) == {}  # left on its default: the study read before the current one
    assert prior_input(_state("a", "a")) == {}  # the current study cannot be its own prior
    assert prior_input(_state("b", "gone")) == {}  # a study no longer in this conversation


def test_side_by_side_follows_the_latest_turn_that_compared():
    compared = {"comparison": {"compared": True, "prior_study_id": "a", "study_id": "b"}}
    refused = {"comparison": {"compared": False, "prior_study_id": "c", "study_id": "b"}}
    turns = [TurnResult(user_text="x", cxr=compared), TurnResult(user_text="y", cxr=refused),
             TurnResult(user_text="z", cxr={})]
    assert latest_comparison(turns) == compared["comparison"]
    assert latest_comparison(turns[1:]) is None


def _dicom(source, *, day: str, seed: int, patient: str = "PAIR-UI-7") -> bytes:
    from dated_dicom import dated_film, film_bytes

    return film_bytes(dated_film(source, patient=patient, day=day, seed=seed))


def _fresh() -> dict:
    return {S.K_INBOX: [], S.K_STUDY_COUNT: 0, S.K_STUDY_LABELS: {}, S.K_STUDY: None, S.K_PENDING: None}


def test_two_films_loaded_together_are_ordered_by_their_headers(shared_data):
    from agents.comparing.pair import StudyPair
    from tools.ingestion.headers import header_facts
    from ui.compare_panel import K_PAIR_NEXT, K_QUEUED, PRIOR_READ, comparison_inputs, load_pair

    source = shared_data / "dicom" / "CR-MONO1-10-chest.dcm"
    later, earlier = _dicom(source, day="20260301", seed=1), _dicom(source, day="20260110", seed=2)
    assert header_facts(later).taken.isoformat() == "2026-03-01T08:00:00" and header_facts(b"not dicom").taken is None
    state = _fresh()
    note = load_pair(state, [("b.dcm", later), ("a.dcm", earlier)])  # the current film chosen first
    assert "taken 50 days before" in note
    prior = state[S.K_STUDY]
    assert state[S.K_PENDING] == prior.id and state[S.K_INBOX] == [PRIOR_READ]  # the prior is read first
    current = state[K_QUEUED]["study"]
    # the prior's read is sent: the current film becomes the page's study, the pair waits for it
    assert comparison_inputs(state, {"study_id": prior.id}) == {}
    assert state[S.K_STUDY] is current and state[S.K_PENDING] == current.id
    out = comparison_inputs(state, {"study_id": current.id})
    pair = StudyPair.model_validate(out["pairs"][current.id])
    assert (pair.prior_study_id, pair.study_id, pair.interval_days) == (prior.id, current.id, 50)
    assert pair.prior_key == pair.current_key and "PAIR-UI-7" not in str(out)
    assert K_PAIR_NEXT not in state
    for study in (prior, current):  # the shared studies keep no date and no id
        assert "2026" not in str(study.metadata) and "PAIR-UI-7" not in str(study.metadata)


def test_two_films_without_dates_keep_the_readers_order(shared_data):
    from ui.compare_panel import K_QUEUED, load_pair

    images = shared_data / "nih_cxr14" / "images"
    first, second = images / "00005567_025.png", images / "00005567_000.png"
    state = _fresh()
    note = load_pair(state, [(first.name, first.read_bytes()), (second.name, second.read_bytes())])
    assert "no dates" in note and state[K_QUEUED]["pair"] is None
    assert state[S.K_STUDY_LABELS][state[S.K_STUDY].id] == "Study 1"
    refused = load_pair(_fresh(), [(first.name, first.read_bytes()), ("x.png", b"not an image")])
    assert refused.startswith("The two films were not loaded")
