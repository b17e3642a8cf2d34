"""The neutral conversation every backend renders, and the sanitiser for user text.

Task instructions are NOT here: each model family's trained instructions live in its adapter
(tools/vlm/adapters/). A conversation's image rides with the FIRST user turn only; later turns are
text. ``ChatTurn.image_first`` says whether the image goes before that turn's text (the adapter
decides per task). Backends turn the ``ChatTurn`` list into their own wire format (processor chat
template or OpenAI content parts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]

# Chat-template control tokens (<|im_start|>, <|im_end|>, ...) and media placeholders must never
# come from user text: they would forge turns or image slots.
_CONTROL = re.compile(r"<\|[^|<>]{1,40}\|>|<image>|<video>", re.I)


def sanitize(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


@dataclass(frozen=True)
class ChatTurn:
    role: Role
    text: str
    image_first: bool = True  # first user turn only: image before (True) or after the text


def conversation(text: str, history: list[dict[str, str]] | None = None, *, image_first: bool = True,
                 system: str | None = None) -> list[ChatTurn]:
    """Earlier turns (``{"role", "content"}``) + this user turn, cleaned for a chat template:
    unknown roles and empty turns are dropped, and it always starts with a user turn (where the
    image goes) and ends with this one; ``system`` (the adapter's) goes first if given."""
    turns: list[ChatTurn] = []
    for item in history or []:
        role = str(item.get("role", "")).lower()
        role = {"human": "user", "ai": "assistant", "bot": "assistant"}.get(role, role)
        content = sanitize(str(item.get("content") or ""))
        if role in ("user", "assistant") and content:
            turns.append(ChatTurn(role, content))  # type: ignore[arg-type]
    while turns and turns[0].role != "user":
        turns.pop(0)
    turns.append(ChatTurn("user", sanitize(text) or "Describe this chest X-ray."))
    if turns[0].role == "user" and turns[0].image_first != image_first:
        turns[0] = ChatTurn("user", turns[0].text, image_first)
    return [ChatTurn("system", system), *turns] if system else turns


def sample_prompts() -> list[str]:
    """Part of the tiny tokenizer's training corpus (tools/vlm/tiny.py). Frozen: these strings were
    the prompts of v0.1, and changing them would change the tiny model every test and demo uses."""
    return [
        "Write the radiology report for this chest X-ray, with a Findings section and an Impression section.",
        "Locate areas in the chest X-ray where left lower lobe opacity is present, using bounding box coordinates.",
        "Is there pleural effusion in this chest X-ray? Answer yes or no.",
        "Is there pneumothorax in this chest X-ray? Answer yes or no, and if yes, give its location "
        "with bounding box coordinates.",
    ]
