"""Several questions about ONE image in one batched ``generate``, sharing the image's KV prefix.

The reconciler's re-asks of a turn (and the report turn's classification + detection asks) are all
"<|im_start|>user\\n<image>xN" + a different instruction. The prefix up to the last image token is
prefilled once (or taken from the per-thread cache), copied across the batch rows, and only the
instructions are prefilled and decoded together. Rows are padded BETWEEN the shared prefix and
their own suffix, with the padding masked out: position ids come from the attention mask, so every
row sees the same positions as it would alone (up to float rounding in padded attention). Prompts that
differ before the image, or a sliding-window model whose window the padding would eat into, are asked
one by one instead (same answers, no sharing).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Hashable
from typing import Any

from PIL import Image

from tools.stop import with_turn_stop
from tools.vlm.backends.base import BackendError, GenerationResult
from tools.vlm.prompts import ChatTurn

# The transformers backend (it calls generate_batch): passed in, never imported, so neither module imports
# the other.
TransformersBackend = Any


def generate_batch(
    backend: TransformersBackend,
    image: Image.Image,
    conversations: list[list[ChatTurn]],
    *,
    cache_key: Hashable | None = None,
    max_new_tokens: int | None = None,
    min_new_tokens: int | None = None,
    cancel: threading.Event | None = None,
) -> list[GenerationResult]:
    import torch

    from tools.vlm.backends import hf_models
    from tools.vlm.backends.stopping import cancel_criteria

    if not conversations:
        return []
    t0 = time.perf_counter()
    cancel = with_turn_stop(cancel)
    if cancel is not None and cancel.is_set():
        raise BackendError("generation cancelled before it started (the call timed out or the turn was stopped)")
    model, processor = backend.load()
    tok = processor.tokenizer
    max_new = int(max_new_tokens or backend.settings.vlm_max_new_tokens)
    serial = False
    with backend._gen_lock:
        encoded, hit, encode_s = backend.encoded_image(image, cache_key)
        rows = [hf_models.tokenize(tok, backend.expanded_prompt(turns, encoded))["input_ids"][0].to(model.device)
                for turns in conversations]
        img = (rows[0] == model.config.image_token_id).nonzero()
        end = int(img.max()) + 1
        head = rows[0][:end]
        n = len(rows)
        width = max(r.shape[0] for r in rows) - end
        window = getattr(getattr(model.config, "text_config", model.config), "sliding_window", None)
        # Ask one by one when the prompts differ before the image (e.g. text-first prompts: nothing to
        # share), or when padding would eat into a row's sliding window.
        serial = any(r.shape[0] < end or not bool((r[:end] == head).all()) for r in rows) or bool(
            hf_models.sliding(model) and window and end + width + max_new > int(window))
        if not serial:
            backend._last_prefix_hit = False
            prefix = backend._prefix(model, encoded, head[None],
                                     store=cache_key is not None and backend.kv_prefix_cache)
            prefix_hit = backend._last_prefix_hit
    if serial:
        return [backend.generate(image, turns, cache_key=cache_key, max_new_tokens=max_new,
                                 min_new_tokens=min_new_tokens, cancel=cancel) for turns in conversations]
    with backend._gen_lock:
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        input_ids = torch.full((n, end + width), pad, dtype=torch.long, device=model.device)
        mask = torch.zeros((n, end + width), dtype=torch.long, device=model.device)
        for i, r in enumerate(rows):
            suffix = r[end:]
            input_ids[i, :end] = head
            mask[i, :end] = 1
            input_ids[i, end + width - suffix.shape[0]:] = suffix
            mask[i, end + width - suffix.shape[0]:] = 1
        cache = copy.deepcopy(prefix)
        if n > 1:
            cache.batch_repeat_interleave(n)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, **hf_models.with_cache(model, cache),
                                  "max_new_tokens": max_new, "do_sample": False, "pad_token_id": pad,
                                  **hf_models.token_types(model, input_ids)}
        if min_new_tokens:
            kwargs["min_new_tokens"] = min(int(min_new_tokens), max_new)
        if cancel is not None:
            kwargs["stopping_criteria"] = cancel_criteria(cancel)
        try:
            with torch.inference_mode():
                out = model.generate(**kwargs)
        except Exception as exc:
            raise BackendError(f"batched generation failed: {type(exc).__name__}: {exc}") from exc
        if cancel is not None and cancel.is_set():
            raise BackendError("generation cancelled (the call timed out or the turn was stopped); "
                               "the model is free again")
    done = time.perf_counter()
    new = out[:, end + width:]
    eos = hf_models.eos_ids(model)
    results = []
    for i in range(n):
        ids = new[i].tolist()
        count, ended = hf_models.answer_length(ids, eos)
        results.append(GenerationResult(
            text=tok.decode(ids[:count], skip_special_tokens=True).strip(), cache_hit=hit, kv_prefix_hit=prefix_hit,
            truncated=not ended and count >= max_new,
            prompt_tokens=int(rows[i].shape[0]), new_tokens=count, ttft_s=None, latency_s=done - t0,
            encode_s=encode_s,
        ))
    return results
