"""The UI's push to the PACS after a comparison: the SR references the prior radiograph the PACS holds for
that study and carries each change; without a comparison (or that prior) it carries none."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from ui_helpers import sample_decisions, sample_evidence

from tools.ingestion.study import Study
from ui import session as S
from ui.pacs import K_PACS_SOURCE, push_to_pacs
from ui.turn import TurnResult

PRIOR = "p" * 64


class Pacs:
    """A PACS client that records what the push was given (the real one is tested against Orthanc)."""

    def __init__(self, prior: object | None) -> None:
        self.prior, self.asked, self.pushed = prior, [], {}

    def compared_prior(self, study_uid: str, prior_study_id: str):
        self.asked.append((study_uid, prior_study_id))
        return self.prior

    def push_report(self, ref, **kw):
        self.pushed = {"ref": ref, **kw}
        return SimpleNamespace(study_uid="1.2", series_uid="1.2.3", sop_uid="1.2.3.4", findings=len(kw["decisions"]))


def _state(study: Study, *, compared: bool) -> dict:
    state: dict = {}
    S.init_session(state)
    state[S.K_STUDY] = study
    state[K_PACS_SOURCE] = (study.id, SimpleNamespace(study_uid="1.2"))
    cxr = {"study_id": study.id}
    if compared:
        cxr["comparison"] = {"compared": True, "study_id": study.id, "prior_study_id": PRIOR, "changes": [
            {"finding": "pleural_effusion", "change": "worse", "confidence": 0.75, "agreeing": ["vlm", "classifier"]}]}
    state[S.K_TURNS].append(TurnResult(user_text="Is it worse?", reply="Worse.", evidence=sample_evidence(),
                                       decisions=sample_decisions(), study_id=study.id, cxr=cxr))
    return state


def test_the_push_after_a_comparison_carries_the_prior_and_the_changes(settings):
    study = Study.from_array(np.zeros((16, 16), dtype=np.float32), view="PA")
    prior_ref = SimpleNamespace(study_uid="1.1")
    pacs = Pacs(prior_ref)
    ok, message = push_to_pacs(_state(study, compared=True), settings, client=pacs)
    assert ok, message
    assert pacs.asked == [("1.2", PRIOR)] and pacs.pushed["prior"] is prior_ref
    assert [(c.finding, c.change) for c in pacs.pushed["changes"]] == [("pleural_effusion", "worse")]
    gone = Pacs(None)  # the PACS holds no such prior: no change groups (they must reference both images)
    assert push_to_pacs(_state(study, compared=True), settings, client=gone)[0]
    assert gone.pushed["prior"] is None and tuple(gone.pushed["changes"]) == ()
    plain = Pacs(prior_ref)
    assert push_to_pacs(_state(study, compared=False), settings, client=plain)[0]
    assert plain.asked == [] and plain.pushed["prior"] is None
