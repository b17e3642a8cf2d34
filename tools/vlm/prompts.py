"""Task prompts in RadVLM's instruction style, and the conversation they go into.

RadVLM was tuned on single instructions (report generation, abnormality grounding, yes/no
classification) and on multi-turn conversations whose FIRST user turn holds the image. We keep
that shape: the image rides with the first user turn only; later turns are text. Backends turn
the neutral ``ChatTurn`` list into their own wire format (processor chat template or OpenAI
content parts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from knowledge.vocabulary import display_name

Role = Literal["system", "user", "assistant"]

REPORT_PROMPT = (
    "Write the radiology report for this chest X-ray, with a Findings section and an Impression section."
)
LOCATE_PROMPT = "Locate areas in the chest X-ray where {target} is present, using bounding box coordinates."
QUESTION_PROMPT = "Is there {target} in this chest X-ray? Answer yes or no."
VERIFY_PROMPT = (
    "Is there {target} in this chest X-ray? Answer yes or no, and if yes, give its location "
    "with bounding box coordinates."
)


# Chat-template control tokens (<|im_start|>, <|im_end|>, ...) and media placeholders must never
# come from user text: they would forge turns or image slots.
_CONTROL = re.compile(r"<\|[^|<>]{1,40}\|>|<image>|<video>", re.I)


def sanitize(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


@dataclass(frozen=True)
class ChatTurn:
    role: Role
    text: str


def target_text(finding: str | None = None, phrase: str | None = None) -> str:
    """The words a prompt uses for what to look at: the free-text phrase, else the finding's name."""
    if phrase and phrase.strip():
        return phrase.strip()
    if finding:
        return display_name(finding).lower()
    raise ValueError("a finding id or a phrase is required")


def report_prompt() -> str:
    return REPORT_PROMPT


def locate_prompt(finding: str | None = None, phrase: str | None = None) -> str:
    return LOCATE_PROMPT.format(target=target_text(finding, phrase))


def question_prompt(finding: str | None = None, phrase: str | None = None) -> str:
    return QUESTION_PROMPT.format(target=target_text(finding, phrase))


def verify_prompt(finding: str) -> str:
    return VERIFY_PROMPT.format(target=target_text(finding))


def conversation(text: str, history: list[dict[str, str]] | None = None) -> list[ChatTurn]:
    """Earlier turns (``{"role", "content"}``) + this user turn, cleaned for a chat template:
    unknown roles and empty turns are dropped, and it always starts with a user turn (where the
    image goes) and ends with this one."""
    turns: list[ChatTurn] = []
    for item in history or []:
        role = str(item.get("role", "")).lower()
        role = {"human": "user", "ai": "assistant", "bot": "assistant"}.get(role, role)
        content = sanitize(str(item.get("content") or ""))
        if role in ("user", "assistant") and content:
            turns.append(ChatTurn(role, content))  # type: ignore[arg-type]
    while turns and turns[0].role != "user":
        turns.pop(0)
    turns.append(ChatTurn("user", sanitize(text) or REPORT_PROMPT))
    return turns


def sample_prompts() -> list[str]:
    """Every prompt shape once (used to train the tiny tokenizer's vocabulary)."""
    return [
        REPORT_PROMPT,
        locate_prompt(phrase="left lower lobe opacity"),
        question_prompt("pleural_effusion"),
        verify_prompt("pneumothorax"),
    ]
