"""What differs between image-text models behind one transformers backend, read off the model itself.

The backend encodes an image once and splices its tokens into any later prompt. Models differ in
a few mechanical ways, all detected from the objects rather than a list of names:
- the keyword arguments ``get_image_features`` takes (LLaVA-OneVision needs ``image_sizes`` and
  ``batch_num_images`` for its anyres tiling; Gemma 3 only ``pixel_values``);
- what the chat template's single image placeholder expands to (LLaVA-OneVision: N copies of
  ``<image>``; Gemma 3: the processor's ``full_image_sequence``, "\\n\\n<start_of_image>" + soft tokens +
  "<end_of_image>\\n\\n");
- whether the forward pass takes ``token_type_ids`` marking image tokens (Gemma 3 attends
  bidirectionally within an image during prefill);
- whether the text model has sliding-window layers (Gemma 3): their cached image prefix is copied for
  each generation instead of cropped back afterwards;
- the keyword the KV cache goes under (``cache`` since transformers 5, ``past_key_values`` before).
Which class to load and which tiny stand-in to build come from the family's adapter.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any


def _params(fn: Any) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def feature_kwargs(model: Any, inputs: Any) -> dict[str, Any]:
    """The processor outputs ``get_image_features`` accepts by name, on the model's device/dtype."""
    names = _params(model.get_image_features)
    out: dict[str, Any] = {"pixel_values": inputs["pixel_values"].to(model.device, model.dtype)}
    for key in ("image_sizes", "batch_num_images"):
        if key in names and inputs.get(key) is not None:
            value = inputs[key]
            out[key] = value.to(model.device) if hasattr(value, "to") else value
    return out


def image_expansion(processor: Any, n_image_tokens: int) -> str:
    """The text that replaces the template's one image placeholder for an image of N tokens."""
    full = getattr(processor, "full_image_sequence", None)
    if isinstance(full, str) and full:
        return full
    return processor.image_token * n_image_tokens


def takes_token_types(model: Any) -> bool:
    return "token_type_ids" in _params(model.forward)


def token_types(model: Any, input_ids: Any) -> dict[str, Any]:
    """``{"token_type_ids": 1 on image tokens}`` for models that take them, else ``{}``."""
    if not takes_token_types(model):
        return {}
    return {"token_type_ids": (input_ids == model.config.image_token_id).long()}


def with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """The KV cache as the keyword this transformers takes: ``cache`` (5.x; ``past_key_values`` warns
    there and goes in 5.40) or ``past_key_values`` (older releases, whose forward has no ``cache``)."""
    return {"cache" if "cache" in _params(model.forward) else "past_key_values": cache}


def sliding(model: Any) -> bool:
    """Whether the text model has sliding-window layers (their KV cache cannot be cropped back)."""
    cfg = getattr(model.config, "text_config", model.config)
    return "sliding_attention" in (getattr(cfg, "layer_types", None) or ())


def tokenize(tokenizer: Any, text: str) -> Any:
    """Token ids of a rendered prompt; a template that already wrote the BOS token gets no second one."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and text.startswith(bos))
    return tokenizer(text, return_tensors="pt", add_special_tokens=add)


def load_class(name: str) -> Any:
    return getattr(importlib.import_module("transformers"), name)


def load_tiny(spec: str, data_dir: Any) -> tuple[Any, Any]:
    module, _, fn = spec.partition(":")
    return getattr(importlib.import_module(module), fn)(data_dir)


def eos_ids(model: Any) -> frozenset[int]:
    """The token ids that end an answer (``generation_config.eos_token_id``: one id or a list)."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    values = [eos] if isinstance(eos, int) else list(eos or [])
    return frozenset(int(t) for t in values if t is not None)


def answer_length(ids: list[int], eos: frozenset[int]) -> tuple[int, bool]:
    """(tokens of the answer up to and including its end-of-answer token, whether it ended on one).
    An answer that never emitted one stopped at the token limit (or was cancelled): it is incomplete."""
    for k, t in enumerate(ids):
        if t in eos:
            return k + 1, True
    return len(ids), False


def tiny_weights(spec: str) -> str:
    """The weights id of a tiny random stand-in: its builder's fixed seed (every build is identical)."""
    module = spec.partition(":")[0]
    seed = getattr(importlib.import_module(module), "SEED", None)
    return f"random:seed={seed}" if seed is not None else "random"
