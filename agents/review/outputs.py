"""Verified outputs of a signed review: the SR pair (AI draft + signed reading), FHIR, STOW-RS push.

The push is only on request and only to the PACS study the image was pulled from: the instance is
found again by its de-identified pixel hash (an uploaded study matches no PACS instance and is
refused), and only a review signed under a login is sent. A review carrying changes since a prior needs
that prior's header: from the store for an uploaded pair, from the PACS (the patient's latest earlier study,
found again by pixel hash) for a pushed one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents.review.model import ReviewError, SignedReview
from tools.interop.signed import (
    Reader,
    SignedChange,
    SignedFinding,
    SignedResult,
    SRRef,
    ai_draft_sr,
    require_verified,
    verified_fhir,
    verified_sr,
)


def signed_result(signed: SignedReview, *, demo: bool = False, earlier_ai_srs: Sequence[SRRef] = ()
                  ) -> SignedResult:
    """The plain data the interop builders take (``earlier_ai_srs``: AI SRs already on the PACS)."""
    r = signed.reviewer
    findings = [SignedFinding(finding=it.finding, status=it.final_status.value,
                              ai_status=None if it.ai_status is None else it.ai_status.value,
                              action=it.action or "kept", ai_confidence=it.ai_confidence, note=it.note)
                for it in signed.items]
    changes = [SignedChange(finding=c.finding, change=c.final_change, ai_change=c.ai_change, action=c.action or "kept",
                            before=c.before.value if c.before else None, now=c.now.value if c.now else None,
                            ai_confidence=c.ai_confidence, agreeing=c.agreeing, disagreeing=c.disagreeing,
                            conflict=c.conflict, possible_change=c.possible_change, flagged=c.flagged, note=c.note)
               for c in signed.changes]
    return SignedResult(document_id=signed.review_id, lineage=signed.lineage, version=signed.version,
                        reader=Reader(name=r.name, identifier=r.id, organisation=r.org, issuer=r.issuer,
                                      verified=r.authenticated),
                        signed_at=datetime.fromisoformat(signed.signed_at), findings=findings,
                        report_text=signed.report_text, ai_report_text=signed.ai_report,
                        ai_decisions=list(signed.ai_decisions), supersedes=signed.supersedes, demo=demo,
                        earlier_ai_srs=tuple(earlier_ai_srs), prior_study_id=signed.prior_study_id,
                        change_rows=tuple(changes))


def sr_pair(signed: SignedReview, source: Any, *, demo: bool = False, earlier_ai_srs: Sequence[SRRef] = (),
            prior: Any = None) -> tuple[Any, Any]:
    """(the AI's draft SR, the signed reading's SR referencing it and any earlier AI SR of the same
    study) against the source image header; ``prior``: the prior image's header, needed when the review
    carries changes since it (both SRs reference it)."""
    result = signed_result(signed, demo=demo, earlier_ai_srs=earlier_ai_srs)
    ai = ai_draft_sr(source, result, prior)
    return ai, verified_sr(source, result, ai, prior=prior)


def fhir_bundle(signed: SignedReview, *, study_uid: str | None = None, demo: bool = False,
                prior_study_uid: str | None = None) -> Any:
    return verified_fhir(signed_result(signed, demo=demo), study_uid=study_uid, prior_study_uid=prior_study_uid)


@dataclass(frozen=True)
class PushedReading:
    ai_sop_uid: str
    verified_sop_uid: str


def push_verified(signed: SignedReview, client: Any, study_uid: str, *, demo: bool = False,
                  earlier_ai_srs: Sequence[SRRef] = ()) -> PushedReading:
    """STOW-RS the AI draft SR and the verified SR into the PACS study the image came from; the verified
    SR also references the AI SRs pushed to that study before (``ReviewStore.pushed_srs``)."""
    require_verified(signed_result(signed, demo=demo))
    ref = client.locate(study_uid, signed.study_id)
    prior = None
    if signed.changes and signed.prior_study_id:
        prior_ref = client.compared_prior(study_uid, signed.prior_study_id)
        if prior_ref is None:
            raise ReviewError(f"the review carries changes since prior study {signed.prior_study_id[:12]}, which is "
                              f"not the patient's latest earlier study on the PACS; nothing was sent")
        prior = client.source_metadata(prior_ref)
    ai, ver = sr_pair(signed, client.source_metadata(ref), demo=demo, earlier_ai_srs=earlier_ai_srs, prior=prior)
    client.store(ai)
    client.store(ver)
    return PushedReading(ai_sop_uid=ai.SOPInstanceUID, verified_sop_uid=ver.SOPInstanceUID)
