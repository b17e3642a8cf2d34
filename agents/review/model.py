"""A clinician's review of one study's AI result: per-finding actions, added findings, the edited report.

Why: the assistant drafts and a clinician decides; the decision must be recorded finding by finding
(what the AI said, what the reader signed, who and when) so that verified DICOM SR / FHIR outputs can
be built from it and so corrections become data. A ``Review`` is the editable draft; ``sign`` turns it
into a frozen ``SignedReview`` (tuples, a content digest) and refuses while any flagged finding lacks an
explicit action: there is no "accept all". A correction is a new ``Review`` that supersedes a signed one.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, get_args
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from knowledge.evidence import Decision, Status
from knowledge.vocabulary import FINDING_SET, display_name, normalize

Action = Literal["accepted", "rejected", "changed", "added"]
ChangeAction = Literal["accepted", "rejected", "changed"]
# The change taxonomy (tools/interop/change.py ``ChangeKind``, repeated so a review loads no DICOM code tables).
ChangeValue = Literal["new", "worse", "stable", "improved", "resolved", "cannot_compare"]
CHANGE_VALUES: tuple[str, ...] = get_args(ChangeValue)
ORG_CLAIMS = ("org", "organization", "organisation", "hd")  # OIDC claims read as the organisation, in order


class ReviewError(ValueError):
    """A review action or signature was refused; the message names the finding or the rule."""


class ReviewIncomplete(ReviewError):
    """Signing was asked while flagged findings still have no explicit action."""


class ReviewSigned(ReviewError):
    """The review is signed: it cannot change, only be superseded by a correction."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Reviewer(BaseModel):
    """Who reviews: from a login (``authenticated``) or a typed name (never verifies anything)."""

    model_config = ConfigDict(frozen=True)

    name: str
    id: str = ""
    org: str = ""
    authenticated: bool = False
    issuer: str = Field("", description="Who vouched for the identity: the OIDC issuer or the graph server.")

    @classmethod
    def from_oidc(cls, user: Any) -> Reviewer:
        """The signed-in Streamlit user (``st.user``, OIDC claims): name, ``sub`` (or e-mail) as the
        identifier, the organisation from the first of ``ORG_CLAIMS`` present, else the issuer's host."""
        claims: Mapping[str, Any] = user.to_dict() if hasattr(user, "to_dict") else dict(user)
        if not claims.get("is_logged_in", True):
            raise ReviewError("no user is logged in: sign in to verify a review")
        ident = str(claims.get("sub") or claims.get("email") or "").strip()
        if not ident:
            raise ReviewError("the login has neither a 'sub' nor an 'email' claim to identify the reviewer")
        name = str(claims.get("name") or " ".join(str(claims.get(k) or "") for k in ("given_name", "family_name"))
                   ).strip() or str(claims.get("email") or ident)
        issuer = str(claims.get("iss") or "oidc")
        org = next((str(claims[k]) for k in ORG_CLAIMS if claims.get(k)), "") or (urlparse(issuer).hostname or "")
        return cls(name=name, id=ident, org=org, authenticated=True, issuer=issuer)

    @classmethod
    def from_identity(cls, identity: Any) -> Reviewer:
        """A caller the graph server authenticated (server/identities.py ``Identity``: id, name, org)."""
        ident = str(getattr(identity, "id", "") or "").strip()
        if not ident:
            raise ReviewError("the server identity has no id")
        return cls(name=str(getattr(identity, "name", "") or ident), id=ident, org=str(getattr(identity, "org", "")),
                   authenticated=True, issuer="cxr-agent graph server")

    @classmethod
    def typed(cls, name: str) -> Reviewer:
        """A name typed without a login: may record a review, never verify it."""
        if not isinstance(name, str) or not name.strip():
            raise ReviewError("a reviewer name is required")
        return cls(name=name.strip()[:64])

    @property
    def label(self) -> str:
        return self.name if self.authenticated else f"(unauthenticated) {self.name}"


class FindingReview(BaseModel):
    """One finding: what the AI decided (None when the reader added it) and what the reader did."""

    finding: str
    ai_status: Status | None = None
    ai_confidence: float | None = None
    flagged: bool = False
    agreeing: tuple[str, ...] = ()
    disagreeing: tuple[str, ...] = ()
    scores: dict[str, float] = Field(default_factory=dict, description="source -> its score for this finding")
    action: Action | None = None
    status: Status | None = Field(None, description="The reader's status, once acted on.")
    note: str = ""

    @property
    def final_status(self) -> Status:
        """What is signed: the reader's status, else the AI's (an unflagged finding left as drafted)."""
        return self.status or self.ai_status or Status.uncertain

    @property
    def changed(self) -> bool:
        return self.final_status != self.ai_status


class Change(BaseModel):
    """One line of the audit trail: who did what to which finding, from what to what."""

    model_config = ConfigDict(frozen=True)

    at: str
    by: str
    what: str  # accepted | rejected | changed | added | report_edited | opened | signed
    finding: str | None = None
    before: str | None = None
    after: str | None = None


class ChangeReview(BaseModel):
    """One change since the prior study: what the comparison decided and what the reader did with it.

    A rejected change is signed as no change claimed (``final_change`` None); the AI's draft stays beside it."""

    finding: str
    ai_change: ChangeValue
    before: Status | None = None
    now: Status | None = None
    ai_confidence: float | None = None
    agreeing: tuple[str, ...] = ()
    disagreeing: tuple[str, ...] = ()
    conflict: bool = False
    possible_change: bool = False
    flagged: bool = False
    action: ChangeAction | None = None
    change: ChangeValue | None = Field(None, description="The reader's change value, once acted on.")
    note: str = ""

    @property
    def final_change(self) -> str | None:
        """What is signed: the reader's change, the AI's when accepted or left unflagged; None when rejected."""
        return None if self.action == "rejected" else (self.change or self.ai_change)


def change_rows(changes: Sequence[Any]) -> list[ChangeReview]:
    """Review rows of a comparison's change decisions (``ChangeDecision``, ``ChangeEntry`` or their dicts)."""
    rows = []
    for c in changes:
        d = c if isinstance(c, Mapping) else c.model_dump(mode="json")
        try:
            rows.append(ChangeReview(
                finding=known(d["finding"]), ai_change=d["change"], before=d.get("before"), now=d.get("now"),
                ai_confidence=None if d.get("confidence") is None else round(float(d["confidence"]), 4),
                agreeing=tuple(d.get("agreeing") or ()), disagreeing=tuple(d.get("disagreeing") or ()),
                conflict=bool(d.get("conflict")), possible_change=bool(d.get("possible_change")),
                flagged=bool(d.get("needs_review"))))
        except (KeyError, ValueError) as exc:
            raise ReviewError(f"a change decision could not be read into the review ({exc})") from None
    return rows


def known(finding: str) -> str:
    """A finding id of the vocabulary from an id or a name it knows."""
    fid = finding if finding in FINDING_SET else normalize(str(finding))
    if fid is None:
        raise ReviewError(f"{finding!r} is not a finding of the vocabulary (knowledge/lexicon.toml)")
    return fid


def _item(d: Decision) -> FindingReview:
    scores: dict[str, float] = {}
    for c in d.calls:
        if c.score is not None:
            scores.setdefault(c.source, round(float(c.score), 4))
    return FindingReview(finding=d.finding, ai_status=d.status, ai_confidence=round(d.confidence, 4),
                         flagged=d.needs_review, agreeing=tuple(d.agreeing), disagreeing=tuple(d.disagreeing),
                         scores=scores)


class _Content(BaseModel):
    """What a review holds (draft or signed)."""

    review_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    lineage: str = Field("", description="The first version's id: every correction of one review shares it.")
    version: int = 1
    supersedes: str | None = None
    thread_id: str
    study_id: str
    reviewer: Reviewer
    ai_report: str = ""
    report_text: str = ""
    ai_decisions: list[Decision] = Field(default_factory=list)
    items: list[FindingReview] = Field(default_factory=list)
    events: list[Change] = Field(default_factory=list)
    opened_at: str = Field(default_factory=_now)
    prior_study_id: str | None = Field(None, description="The prior study the changes are against (None: no "
                                       "comparison was made on this study).")
    changes: list[ChangeReview] = Field(default_factory=list, description="The change decisions since the prior.")

    def item(self, finding: str) -> FindingReview:
        """The row of ``finding`` (an id or a name the vocabulary knows)."""
        fid = finding if finding in FINDING_SET else normalize(finding)
        for it in self.items:
            if it.finding == fid:
                return it
        raise ReviewError(f"{finding!r} is not a finding of this review; add it with add()")

    def change_row(self, finding: str) -> ChangeReview:
        """The change row of ``finding`` (an id or a name the vocabulary knows)."""
        fid = finding if finding in FINDING_SET else normalize(finding)
        for row in self.changes:
            if row.finding == fid:
                return row
        raise ReviewError(f"{finding!r} has no change since the prior study in this review")


class Review(_Content):
    """The editable review of one study. Act on it, then ``sign``; a signed Review refuses every change."""

    _signed: bool = PrivateAttr(False)

    @classmethod
    def draft(cls, *, thread_id: str, study_id: str, reviewer: Reviewer, decisions: Sequence[Decision],
              report: str = "", prior_study_id: str | None = None, changes: Sequence[Any] = ()) -> Review:
        """A fresh review of the AI's decisions and report on ``study_id``, and of its change decisions since
        ``prior_study_id`` when the study was compared with one (``ChangeDecision`` / ``ChangeEntry``)."""
        if not decisions and not report.strip():
            raise ReviewError(f"study {study_id[:12]} has no AI result on this thread to review")
        if changes and not prior_study_id:
            raise ReviewError("change decisions need the prior study they are against (prior_study_id)")
        if prior_study_id == study_id:
            raise ReviewError("the prior study is the reviewed study itself")
        r = cls(thread_id=thread_id, study_id=study_id, reviewer=reviewer, ai_report=report, report_text=report,
                ai_decisions=list(decisions), items=[_item(d) for d in decisions],
                prior_study_id=prior_study_id if changes else None, changes=change_rows(changes))
        r.lineage = r.review_id
        r._log("opened")
        return r

    def _log(self, what: str, finding: str | None = None, before: Any = None, after: Any = None) -> None:
        def text(v: Any) -> str | None:
            return None if v is None else str(getattr(v, "value", v))

        self.events.append(Change(at=_now(), by=self.reviewer.id or self.reviewer.label, what=what,
                                  finding=finding, before=text(before), after=text(after)))

    def _open(self) -> None:
        if self._signed:
            raise ReviewSigned("this review is signed and frozen; open a correction (a new version) instead")

    def _act(self, finding: str, action: Action, status: Status, note: str) -> FindingReview:
        self._open()
        it = self.item(finding)
        before = it.final_status
        it.action, it.status, it.note = action, status, note.strip()
        self._log(action, it.finding, before, status)
        return it

    def accept(self, finding: str, note: str = "") -> FindingReview:
        """The reader agrees with the AI's status."""
        it = self.item(finding)
        if it.ai_status is None:
            raise ReviewError(f"{display_name(it.finding)} was added by the reader; change() its status instead")
        return self._act(finding, "accepted", it.ai_status, note)

    def reject(self, finding: str, note: str = "") -> FindingReview:
        """The reader says the AI's call is wrong: present becomes absent and absent present."""
        it = self.item(finding)
        if it.ai_status not in (Status.present, Status.absent):
            raise ReviewError(f"{display_name(it.finding)} has no AI present/absent call to reject; "
                              "change() it to present or absent")
        flipped = Status.absent if it.ai_status == Status.present else Status.present
        return self._act(finding, "rejected", flipped, note)

    def change(self, finding: str, status: Status | str, note: str = "") -> FindingReview:
        """The reader sets the status (present, absent or uncertain); a finding the reader added stays "added"."""
        return self._act(finding, "added" if self.item(finding).ai_status is None else "changed", _status(status), note)

    def add(self, finding: str, status: Status | str = Status.present, note: str = "") -> FindingReview:
        """A finding the tools missed, from the vocabulary (id or any synonym it knows)."""
        self._open()
        fid = finding if finding in FINDING_SET else normalize(finding)
        if fid is None:
            raise ReviewError(f"{finding!r} is not a finding of the vocabulary (knowledge/lexicon.toml)")
        if any(it.finding == fid for it in self.items):
            raise ReviewError(f"{display_name(fid)} is already in the review; accept, reject or change it")
        it = FindingReview(finding=fid, action="added", status=_status(status), note=note.strip())
        self.items.append(it)
        self._log("added", fid, None, it.status)
        return it

    def edit_report(self, text: str) -> None:
        """Replace the report text (the AI's draft stays in ``ai_report``)."""
        self._open()
        if not isinstance(text, str):
            raise ReviewError("the report text must be a string")
        if text != self.report_text:
            self._log("report_edited", None, f"{len(self.report_text)} chars", f"{len(text)} chars")
            self.report_text = text

    def _act_change(self, finding: str, action: ChangeAction, change: str | None, note: str) -> ChangeReview:
        self._open()
        row = self.change_row(finding)
        before = row.final_change
        row.action, row.change, row.note = action, change, note.strip()  # type: ignore[assignment]
        self._log(f"change_{action}", row.finding, before, row.final_change or "no change")
        return row

    def accept_change(self, finding: str, note: str = "") -> ChangeReview:
        """The reader agrees with the AI's change since the prior study."""
        return self._act_change(finding, "accepted", self.change_row(finding).ai_change, note)

    def reject_change(self, finding: str, note: str = "") -> ChangeReview:
        """The reader says the AI's change is wrong: no change is signed for the finding."""
        return self._act_change(finding, "rejected", None, note)

    def set_change(self, finding: str, change: str, note: str = "") -> ChangeReview:
        """The reader sets the change to another value of the taxonomy (new, worse, stable, improved,
        resolved, cannot_compare)."""
        value = str(change).strip().lower().replace(" ", "_")
        if value not in CHANGE_VALUES:
            raise ReviewError(f"change must be one of {', '.join(CHANGE_VALUES)} (got {change!r})")
        return self._act_change(finding, "changed", value, note)

    def pending(self) -> list[str]:
        """Flagged findings still without an explicit action (they block signing)."""
        return [it.finding for it in self.items if it.flagged and it.action is None]

    def pending_changes(self) -> list[str]:
        """Findings whose flagged change since the prior has no explicit action yet (they block signing too)."""
        return [row.finding for row in self.changes if row.flagged and row.action is None]

    @property
    def signed(self) -> bool:
        return self._signed

    def sign(self) -> SignedReview:
        """Freeze the review under its reviewer. Verified only when the reviewer logged in."""
        self._open()
        left, moved = self.pending(), self.pending_changes()
        if left or moved:
            parts = []
            if left:
                parts.append("flagged finding(s) need an explicit accept, reject or change before signing: "
                             + ", ".join(display_name(f) for f in left))
            if moved:
                parts.append("flagged change(s) since the prior need an explicit accept, reject or change before "
                             "signing: " + ", ".join(display_name(f) for f in moved))
            raise ReviewIncomplete("; ".join(parts))
        self._log("signed", None, None, "verified" if self.reviewer.authenticated else "unverified")
        self._signed = True
        data = self.model_dump(mode="json")
        data["signed_at"] = self.events[-1].at
        return SignedReview.model_validate({**data, "digest": content_digest(data)})

    def model_post_init(self, context: Any) -> None:
        if not self.lineage:
            self.lineage = self.review_id


class SignedReview(_Content):
    """A signed, frozen review. ``verified``: signed under a login (else outputs stay unverified)."""

    model_config = ConfigDict(frozen=True)

    signed_at: str
    digest: str = Field(description="sha256 of the content: a changed file no longer matches")

    @property
    def verified(self) -> bool:
        return self.reviewer.authenticated

    def check(self) -> SignedReview:
        """Raise ReviewError when the content no longer matches its digest (the file was altered)."""
        data = self.model_dump(mode="json", exclude={"digest"})
        if content_digest(data) != self.digest:
            raise ReviewError(f"signed review {self.review_id} was altered after signing (digest mismatch)")
        return self

    def correction(self, reviewer: Reviewer) -> Review:
        """A new version starting from this signed result, superseding it once signed."""
        data = self.model_dump(exclude={"digest", "signed_at", "events", "review_id", "opened_at"})
        r = Review(**{**data, "reviewer": reviewer, "version": self.version + 1, "supersedes": self.review_id})
        r._log("opened", None, None, f"correction of version {self.version}")
        return r


def _status(value: Status | str) -> Status:
    try:
        return value if isinstance(value, Status) else Status(str(value).strip().lower())
    except ValueError:
        raise ReviewError(f"status must be present, absent or uncertain (got {value!r})") from None


def content_digest(data: Mapping[str, Any]) -> str:
    """sha256 of the content. A review of a study never compared with a prior hashes exactly as before change
    rows existed (``prior_study_id`` / ``changes`` left out when empty), so reviews signed then still check."""
    body = {k: v for k, v in data.items() if k != "digest"
            and not (k in ("prior_study_id", "changes") and not v)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
