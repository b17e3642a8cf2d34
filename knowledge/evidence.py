"""The typed evidence every tool returns and the reconciler consumes.

Plain pydantic models so they validate at the boundary, serialise into checkpoints and JSON
exports, and carry their provenance (which tool, which score, which box) into every reply.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from knowledge.vocabulary import FINDING_SET, known_finding

ScoreKind = Literal["op_norm", "probability", "neighbor_fraction", "logit", "other"]
# Why a call exists although its source never stated it (set by the reconciler, never by a tool):
# "normal_study" - the source called the study normal and said nothing about this finding;
# "report_silence" - the source wrote a full report that does not mention this finding.
Implied = Literal["normal_study", "report_silence"]
# Which skill of a source produced a call (a VLM answers in several shapes; None for single-skill tools):
# "classification" = an explicit statement about every label of a list (listed -> present, else absent).
CallTask = Literal["report", "classification", "detection", "question", "verification"]
# v0.1 wrote implied calls as text prefixes; FindingCall reads them back into `implied`.
_V01_IMPLIED_PREFIX = "implied by a no-finding statement: "
_V01_SILENT_TEXT = "not mentioned in its full report"


class Status(str, Enum):
    present = "present"
    absent = "absent"
    uncertain = "uncertain"


class Box(BaseModel):
    """A region, relative to the ORIGINAL image: (x1, y1) top-left, (x2, y2) bottom-right, in [0, 1]."""

    model_config = ConfigDict(frozen=True)

    x1: float = Field(ge=0.0, le=1.0)
    y1: float = Field(ge=0.0, le=1.0)
    x2: float = Field(ge=0.0, le=1.0)
    y2: float = Field(ge=0.0, le=1.0)
    label: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x2 < self.x1 or self.y2 < self.y1:
            raise ValueError(f"box corners out of order: ({self.x1}, {self.y1}, {self.x2}, {self.y2})")
        return self

    @property
    def area(self) -> float:
        return (self.x2 - self.x1) * (self.y2 - self.y1)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        return (round(self.x1 * width), round(self.y1 * height), round(self.x2 * width), round(self.y2 * height))


class FindingCall(BaseModel):
    """One source's statement about one finding."""

    finding: str
    status: Status
    score: float | None = None
    score_kind: ScoreKind | None = Field(
        None,
        description="What `score` is: 'op_norm' (classifier, 0.5 = at its calibrated threshold; NOT a "
        "probability), 'probability', 'neighbor_fraction' (retrieval), 'logit', 'other'.",
    )
    raw_score: float | None = Field(None, description="The model's raw output before any mapping.")
    source: str = Field(description="Tool name: 'vlm', 'classifier', 'retrieval' or a custom tool's name.")
    box: Box | None = None
    text: str | None = Field(None, description="The words this call rests on (e.g. the report sentence).")
    span: tuple[int, int] | None = Field(None, description="Character offsets of `text` in the source text.")
    implied: Implied | None = Field(
        None, description="Set when the source never stated this call and the reconciler inferred it: "
        "'normal_study' (its 'no finding' statement, quoted in `text`) or 'report_silence' (its full report "
        "does not mention the finding).")
    task: CallTask | None = Field(
        None, description="Which skill of the source made the call: 'report', 'classification' (one call per "
        "label of a list the model states in full), 'detection', 'question', 'verification'; None if unknown.")

    @model_validator(mode="before")
    @classmethod
    def _v01_markers(cls, data: Any) -> Any:
        """Checkpoints written by v0.1 carry the reconciler's markers as text: read them into `implied`."""
        if isinstance(data, dict) and data.get("implied") is None and isinstance(data.get("text"), str):
            text = data["text"]
            if text.startswith(_V01_IMPLIED_PREFIX):
                quote = text[len(_V01_IMPLIED_PREFIX):]
                data = {**data, "implied": "normal_study", "text": None if quote == "no finding" else quote}
            elif text == _V01_SILENT_TEXT:
                data = {**data, "implied": "report_silence", "text": None}
        return data

    @field_validator("finding")
    @classmethod
    def _known_finding(cls, v: str) -> str:
        return known_finding(v)


class RetrievedReport(BaseModel):
    id: str
    score: float = Field(description="Similarity (cosine for normalised embeddings).")
    text: str = Field(description="A snippet of the report.")
    labels: list[str] = Field(default_factory=list, description="Findings the report states as present.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class Artifact(BaseModel):
    """Something a UI can show beside the reply: a heatmap file, an overlay, a box set."""

    kind: Literal["heatmap", "overlay", "boxes", "file", "other"]
    finding: str | None = None
    uri: str | None = Field(None, description="Path of the stored artifact (e.g. a .npy heatmap in original-image size).")
    box: Box | None = None
    description: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class Evidence(BaseModel):
    """What one tool returned for one turn. Tools never raise into the graph: failures are ok=False."""

    tool: str
    ok: bool = True
    error: str | None = None
    calls: list[FindingCall] = Field(default_factory=list)
    report: str | None = None
    answer: str | None = Field(None, description="Free-text answer (chat, yes/no reply, grounding sentence).")
    neighbors: list[RetrievedReport] = Field(default_factory=list)
    artifacts: list[Artifact] = Field(default_factory=list)
    latency_ms: float | None = None
    meta: dict[str, Any] = Field(default_factory=dict, description="Model name, profile, operating point, ...")
    truncated: bool = Field(False, description="The answer stopped at the token limit: its text is incomplete, "
                                                "so its silence on a finding says nothing.")

    @classmethod
    def failure(cls, tool: str, error: str, **kw: Any) -> Evidence:
        return cls(tool=tool, ok=False, error=error, **kw)


ReasonRule = Literal[
    "prior_only",  # no image source assessed it: only similar prior reports mention it
    "agree",  # two or more image sources on one side
    "single_source",  # one image source is definite and no other commented
    "one_definite",  # one image source is definite, the others are uncertain
    "uncertain_only",  # every image source is uncertain
    "listed_only",  # only a classification list names it; the other image sources are uncertain
    "conflict",  # image sources say present vs absent
    "prior_shift",  # retrieval moved the confidence (never the status)
    "prior_unsettled",  # retrieval beside an uncertain decision: no shift
    "no_finding_contradicted",  # 'no finding' beside a present or disputed finding
    "reask_agrees",  # the targeted re-ask now agrees with the other image sources (rule A)
    "reask_box_overlap",  # the VLM maintains a positive and its box overlaps the classifier heatmap (rule B)
    "reask_overrules",  # the VLM, asked directly, denies a moderate positive (rule D)
    "reask_unresolved",  # anything else (rule C)
]
UnresolvedCause = Literal["tool_failed", "not_addressed", "box_no_overlap", "no_box", "uncertain_answer",
                          "maintained", "not_settled"]


class Reason(BaseModel):
    """One step of the reconciler's policy behind a Decision, as data: which rule applied, the calls it
    weighed (each carrying its source, status, score, quote and box) and the numbers it compared. The
    responder's wording (agents/replying/phrases.py) turns a Decision's reasons into its rationale."""

    rule: ReasonRule
    status: Status | None = Field(None, description="The status this step concluded, where it concludes one.")
    present: list[FindingCall] = Field(default_factory=list, description="Calls (one per source) saying present.")
    absent: list[FindingCall] = Field(default_factory=list)
    uncertain: list[FindingCall] = Field(default_factory=list)
    prior: FindingCall | None = Field(None, description="The retrieval call cited as a prior.")
    answer: FindingCall | None = Field(None, description="The targeted re-ask's answer.")
    asked: str | None = Field(None, description="Re-ask: the tool asked (its name), answer or not.")
    others: list[str] = Field(default_factory=list, description="Re-ask: the other image sources' names.")
    findings: list[str] = Field(default_factory=list, description="no_finding: the findings contradicting it.")
    low_confidence: bool = False
    kept_high_confidence: bool = Field(False, description="A high-confidence positive kept although disputed.")
    undisputed: bool = False
    withdrawn: bool = Field(False, description="Re-ask: the source withdrew its earlier positive statement.")
    iou: float | None = None
    threshold: float | None = Field(None, description="The line compared with (IoU minimum, high-confidence score).")
    cause: UnresolvedCause | None = None
    error: str | None = None


class Decision(BaseModel):
    """The reconciled verdict on one finding, with the sources behind it.

    Frozen: the reconciler's memo and the checkpoint encoder hand back the same object for a finding whose
    evidence did not change, so a changed verdict is always a new Decision (``model_copy(update=...)``)."""

    model_config = ConfigDict(frozen=True)

    finding: str
    status: Status
    confidence: float = Field(ge=0.0, le=1.0)
    agreeing: list[str] = Field(default_factory=list)
    disagreeing: list[str] = Field(default_factory=list)
    conflict: bool = False
    needs_review: bool = False
    verification: str | None = Field(None, description="Outcome of the targeted VLM re-ask, if one ran.")
    rationale: str = ""
    calls: list[FindingCall] = Field(default_factory=list, description="The evidence this decision cites.")
    box: Box | None = None
    reasons: list[Reason] = Field(default_factory=list, description="The policy steps behind the status, as data; "
                                  "`rationale` is their wording.")

    @field_validator("finding")
    @classmethod
    def _known_finding(cls, v: str) -> str:
        if v not in FINDING_SET:
            raise ValueError(f"unknown finding id {v!r}")
        return v
