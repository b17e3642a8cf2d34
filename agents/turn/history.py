"""The earlier conversation a chat turn sends to the VLM, bounded in messages and in characters.

Why characters too: a model's context (and the time a turn takes) grows with the text, not the
message count; twenty replies of a few thousand characters each would crowd out the question.
The newest messages are kept; the oldest one that still fits in part is cut at its start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

CUT_MARK = "…"


def chat_history(messages: Sequence[Any], max_chars: int, text_of: Callable[[Any], str],
                 turns: int) -> list[dict[str, str]]:
    """``[{"role", "content"}]`` of the last ``turns`` user/assistant messages, oldest first, whose
    contents add up to at most ``max_chars`` characters (0: no history)."""
    kept: list[dict[str, str]] = []
    budget = max(0, int(max_chars))
    for m in reversed(list(messages)[-turns:] if turns > 0 else []):
        role = "user" if isinstance(m, HumanMessage) else "assistant" if isinstance(m, AIMessage) else None
        if role is None:
            continue
        if budget <= len(CUT_MARK):
            break
        text = text_of(m)
        if len(text) > budget:
            text = CUT_MARK + text[len(text) - budget + len(CUT_MARK):]
        kept.append({"role": role, "content": text})
        budget -= len(text)
    return kept[::-1]
