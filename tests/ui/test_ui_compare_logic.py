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
