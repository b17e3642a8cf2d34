"""The typed evidence every tool returns and the reconciler consumes.

Plain pydantic models so they validate at the boundary, serialise into checkpoints and JSON
exports, and carry their provenance (which tool, which score, which box) into every reply.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from knowledge.vocabulary import FINDING_SET

BUILTIN_SOURCES = ("vlm", "classifier", "retrieval")
IMAGE_SOURCES = frozenset({"vlm", "classifier"})

ScoreKind = Literal["op_norm", "probability", "neighbor_fraction", "logit", "other"]


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

    @field_validator("finding")
    @classmethod
    def _known_finding(cls, v: str) -> str:
        if v not in FINDING_SET:
            raise ValueError(f"unknown finding id {v!r}; use knowledge.vocabulary.normalize()")
        return v


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

    @classmethod
    def failure(cls, tool: str, error: str, **kw: Any) -> Evidence:
        return cls(tool=tool, ok=False, error=error, **kw)


class Decision(BaseModel):
    """The reconciled verdict on one finding, with the sources behind it."""

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

    @field_validator("finding")
    @classmethod
    def _known_finding(cls, v: str) -> str:
        if v not in FINDING_SET:
            raise ValueError(f"unknown finding id {v!r}")
        return v
