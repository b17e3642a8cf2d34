"""The one interface both VLM backends implement.

A backend takes the model image, a neutral conversation (the image belongs to the first user
turn) and an optional cache key, and returns the generated text with timing facts. It raises
``BackendError`` (or ``ModelUnavailable``) with a message meant for the user; the tool turns
that into ``Evidence.failure``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from PIL import Image

from tools.vlm.prompts import ChatTurn


class BackendError(RuntimeError):
    """Generation failed; the message says what happened and how to fix it."""


class ModelUnavailable(BackendError):
    """The model cannot be used here: weights missing, or the server is not answering."""


class CacheKey(NamedTuple):
    """Which cached encoding of a study an ask may use. ``shared``: the ask's prompt does not depend on
    the user's words (a fixed-prompt report, classification or detection), so every thread reading
    this study shares one entry; otherwise the entry belongs to ``thread`` alone."""

    thread: str | None
    study: str
    shared: bool = False


@dataclass
class GenerationResult:
    text: str
    truncated: bool = False  # generation stopped at the token limit, not at the model's end of answer
    cache_hit: bool = False  # the encoded image was reused
    kv_prefix_hit: bool = False  # the text model's KV cache of the image prefix was reused too
    prompt_tokens: int | None = None
    new_tokens: int | None = None
    ttft_s: float | None = None  # time to first generated token
    latency_s: float | None = None
    encode_s: float | None = None  # image preprocessing + vision tower (0 on a cache hit)


@runtime_checkable
class VLMBackend(Protocol):
    name: str  # "transformers" | "openai"
    model_id: str
    profile: str

    def generate(
        self,
        image: Image.Image,
        turns: list[ChatTurn],
        *,
        cache_key: Hashable | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult: ...

    # Optional: ``generate_batch(image, conversations, *, cache_key, max_new_tokens, cancel)`` ->
    # one GenerationResult per conversation, all about the same image (the tool falls back to serial
    # ``generate`` calls when a backend lacks it).
