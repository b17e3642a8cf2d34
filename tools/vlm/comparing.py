"""A VLM reading a prior and the current film together: one fresh single-turn prompt with both images.

Only a family whose adapter declares ``compares_priors`` (MedGemma 1.5: its longitudinal notebook's form)
is asked; any other gets an Evidence saying it cannot compare, and nothing is improvised. The prompt is the
adapter's (prior image first, then the current one, then its text), never a continuation of a conversation:
the model card says it was not evaluated for multi-turn use. Runs on the local transformers backend (its
processor expands both images) or on a backend that sends several images in one turn (``generate_images``:
the OpenAI-compatible one, the same message list as base64 PNG parts, prior first); any other backend is
refused with a message saying so. The answer's change statements are read by the adapter into
``meta["changes"]`` (finding, change, sentence, source) for the change rule, and the prose stays the answer.
A re-ask about one finding (``finding``) is the same form with the adapter's question about that finding;
only its statements about that finding count.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from knowledge.evidence import Evidence
from knowledge.vocabulary import FINDING_SET
from tools.provenance import prompt_id

if TYPE_CHECKING:
    from tools.ingestion.study import Study

log = logging.getLogger(__name__)


def compare_with_prior(tool: Any, prior: Study, current: Study, *, finding: str | None = None,
                       max_new_tokens: int | None = None, cancel: threading.Event | None = None,
                       on_token: Callable[[str], None] | None = None) -> Evidence:
    """The VLM tool's family (``tool``: a tools.vlm.tool.VLMTool) reading ``prior`` and ``current`` together,
    as one Evidence (never raises). ``on_token``: the answer's pieces as they arrive (a thinking trace held
    back as the family's filter does), from the local transformers backend and the OpenAI-compatible one."""
    adapter: Any = tool.adapter
    if not getattr(adapter, "compares_priors", False) or not hasattr(adapter, "comparison_prompt"):
        return Evidence(tool=tool.name, answer=f"{adapter.display_name} cannot compare two films (no documented "
                        "two-image prompt)", meta={"compares_priors": False, "family": adapter.family})
    backend: Any = tool.backend
    local = hasattr(backend, "load") and hasattr(backend, "render")
    remote = getattr(backend, "generate_images", None)
    if not local and not callable(remote):
        return Evidence.failure(tool.name, "comparing two films needs a backend that sends both images in one "
                                f"turn (the local transformers or the OpenAI-compatible one); the "
                                f"{getattr(backend, 'name', type(backend).__name__)} backend sends one image per "
                                "conversation")
    if prior.id == current.id:
        return Evidence.failure(tool.name, "the prior and the current study are the same image")
    from tools.vlm.adapters.medgemma import read_changes

    t0 = time.perf_counter()
    if finding is not None and finding not in FINDING_SET:
        return Evidence.failure(tool.name, f"unknown finding id {finding!r} for a comparison re-ask")
    prompt = adapter.comparison_prompt(finding) if finding is not None else adapter.comparison_prompt()
    result = None
    try:
        if local:
            text, truncated = _generate(tool, backend, prior, current, prompt, max_new_tokens, cancel, on_token)
        else:
            result = _generate_remote(tool, remote, prior, current, prompt, max_new_tokens, cancel, on_token)
            text, truncated = result.text, result.truncated
    except Exception as exc:  # noqa: BLE001 - a tool never raises into the graph
        return Evidence.failure(tool.name, f"comparison failed: {type(exc).__name__}: {exc}"[:300])
    changes = [c for c in read_changes(text, source=tool.name) if finding is None or c.finding == finding]
    meta = {**tool._meta(result, prompt.text), "task": "comparison", "prior_study_id": prior.id,
            **({"finding": finding} if finding is not None else {}),
            "prompt_id": prompt_id(adapter.family, [prompt.text, *prompt.images]), "fixed_prompt": True,
            "changes": [asdict(c) for c in changes], "compares_priors": True}
    said = getattr(adapter, "answer_text", None)  # a thinking trace is not the answer
    return Evidence(tool=tool.name, answer=said("comparison", text) if callable(said) else text, meta=meta,
                    truncated=truncated,
                    latency_ms=round((time.perf_counter() - t0) * 1000, 1))


def _generate_remote(tool: Any, generate_images: Callable[..., Any], prior: Study, current: Study, prompt: Any,
                     max_new_tokens: int | None, cancel: threading.Event | None,
                     on_token: Callable[[str], None] | None) -> Any:
    """The same message list as the local path, sent in one request. Each film keeps the cache key of its
    fixed-prompt asks, so a study already read in this process is not encoded again."""
    from tools.vlm.adapters.medgemma import comparison_messages

    msgs = comparison_messages(tool.model_image(prior).image, tool.model_image(current).image, prompt)
    keys = [tool.cache_key(study, None, fixed=True) for study in (prior, current)]
    return generate_images(msgs, image_keys=keys, max_new_tokens=int(max_new_tokens or tool.settings.vlm_max_new_tokens),
                           on_token=tool.shown_tokens(on_token), cancel=cancel)


def _generate(tool: Any, backend: Any, prior: Study, current: Study, prompt: Any, max_new_tokens: int | None,
              cancel: threading.Event | None, on_token: Callable[[str], None] | None = None) -> tuple[str, bool]:
    import torch

    from tools.vlm.adapters.medgemma import comparison_messages
    from tools.vlm.backends import hf_models
    from tools.vlm.backends.stopping import cancel_criteria

    model, processor = backend.load()
    images = (tool.model_image(prior).image, tool.model_image(current).image)
    msgs = comparison_messages(*images, prompt)
    inputs = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt").to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    max_new = int(max_new_tokens or tool.settings.vlm_max_new_tokens)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": False}
    if cancel is not None:
        if cancel.is_set():
            raise RuntimeError("cancelled before it started")
        kwargs["stopping_criteria"] = cancel_criteria(cancel)
    shown = tool.shown_tokens(on_token)
    if shown is not None:
        kwargs["streamer"] = _pieces()(processor.tokenizer, shown)
    with getattr(backend, "_gen_lock", None) or nullcontext(), torch.inference_mode():
        out = model.generate(**inputs, **kwargs)
    if cancel is not None and cancel.is_set():
        raise RuntimeError("cancelled (the call timed out or the turn was stopped)")
    new_ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    count, ended = hf_models.answer_length(new_ids, hf_models.eos_ids(model))
    text = processor.tokenizer.decode(new_ids[:count], skip_special_tokens=True).strip()
    return text, (not ended and count >= max_new)



@functools.cache
def _pieces() -> type:
    """transformers' TextStreamer handing each finished piece of text to a callback (in the generating
    thread: no queue, no second thread) instead of printing it; the prompt and special tokens are not shown.
    Built on first use, so importing this module does not import transformers."""
    from transformers import TextStreamer

    class Pieces(TextStreamer):
        def __init__(self, tokenizer: Any, on_token: Callable[[str], None]) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self._on_token = on_token

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                try:
                    self._on_token(text)
                except Exception as exc:  # noqa: BLE001 - a display callback never stops the reading
                    log.warning("on_token callback failed: %s", exc)

    return Pieces
