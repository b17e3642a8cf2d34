"""One instruction sent to the VLM and its answer: what an Evidence's provenance (``meta["asks"]``) records."""

from __future__ import annotations

from dataclasses import dataclass

from tools.vlm.backends.base import GenerationResult
from tools.vlm.prompts import ChatTurn


@dataclass(frozen=True)
class Ask:
    """``fixed``: the instruction depends on the study alone (never on the user's words), so its answer
    may be shared across conversations. ``finding``: the finding it was about, when there is one."""

    task: str
    turns: list[ChatTurn]
    result: GenerationResult | None
    fixed: bool
    finding: str | None = None

    @property
    def name(self) -> str:
        return f"{self.task}:{self.finding}" if self.finding else self.task

    @property
    def truncated(self) -> bool:
        """The answer stopped at the token limit: its text is incomplete."""
        return bool(self.result is not None and self.result.truncated)
