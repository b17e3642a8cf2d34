"""The numbers of the change rule, with why each was chosen.

A classifier's op-normalised score is its confidence that a finding is there (0.5 = its calibrated
operating point), not how large or severe it is. So a score that rises between two films may support
"new" (absent before, present now), "resolved" (present before, absent now) or "persistent" (present
on both), never "worse" or "improved": those need a source that reads the two images together
(``compares_priors``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ChangePolicy(BaseModel):
    """Thresholds of the change rule (``agents.comparing.decide.compare``)."""

    model_config = ConfigDict(frozen=True)

    min_score_delta: float = Field(
        0.15, ge=0.0, le=1.0,
        description="A classifier's new/resolved needs its op-norm score to move at least this far: the "
        "classifier calls present/absent 0.1 either side of 0.5, so a flip between 0.45 and 0.62 is the "
        "operating point's jitter, not a change; 0.15 is more than the two margins' half-width together.")
    single_source_confidence: float = Field(
        0.6, ge=0.0, le=1.0,
        description="Confidence of a change one comparing source supports: above even, never sure, since "
        "the classifier reads each film alone.")
    agree_bonus: float = Field(
        0.15, ge=0.0, le=1.0, description="Added per further comparing source that supports the same change.")
    view_penalty: float = Field(
        0.2, ge=0.0, le=1.0,
        description="Subtracted when the two films differ in view (AP vs PA) or patient position: the heart "
        "looks larger on AP and effusions layer when supine, so a difference may be the projection.")
    possible_change_penalty: float = Field(
        0.1, ge=0.0, le=1.0,
        description="Subtracted when a non-comparing report writer's two reads disagree with the decision.")
    floor: float = Field(0.05, ge=0.0, le=1.0)
    ceiling: float = Field(0.95, ge=0.0, le=1.0)

    def clip(self, value: float) -> float:
        return round(min(self.ceiling, max(self.floor, value)), 3)
