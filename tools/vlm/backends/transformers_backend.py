"""Local RadVLM through transformers (GPU or CPU), or the tiny random stand-in.

- Loaded lazily, once per process and configuration (a lock guards the load).
- Generation is serialised with a lock: one model, one stream at a time (greedy decoding).
- Encoded-study cache: per ``CacheKey`` (a thread and a study; or the study alone for the fixed-prompt
  report/classification/detection asks, which never carry the user's words and so are shared by every
  thread reading that study) we keep the vision tower's output (the packed, projected image features)
  and the number of image tokens. A new thread's entry starts from the study's shared entry (its
  features and image-only KV prefix), so a second conversation about a study encodes nothing again;
  a prefix that holds a user's words is stored in that thread's entry only. transformers 5 lets ``generate``
  take them back as ``mm_encoder_outputs``, so a follow-up turn skips image preprocessing and
  the whole vision tower. On top of that (``kv_prefix_cache``) we keep the text model's KV cache
  of the prompt prefix that ends with the image tokens ("<|im_start|>user\n<image>x N"): every
  turn about the same study starts with it, so a follow-up also skips the prefill of the ~3,700
  image tokens. The cache is cropped back to the prefix after each generation. Bounded LRU.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from PIL import Image

from cxr_agent.heap import settle
from tools.stop import with_turn_stop
from tools.vlm.backends.base import BackendError, CacheKey, GenerationResult, ModelUnavailable
from tools.vlm.backends.stopping import cancel_criteria
from tools.vlm.prompts import ChatTurn

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_CACHE_ENTRIES = 8


def resolve_device_dtype(settings: Settings) -> tuple[str, Any]:
    """settings.vlm_device / vlm_dtype -> (device, torch dtype). auto: CUDA with float16 (the
    dtype RadVLM's authors run it in; bfloat16 can be chosen) if present, else CPU float32."""
    import torch

    device = settings.vlm_device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable(f"CXR_AGENT_VLM_DEVICE={settings.vlm_device} but no CUDA device is available; use 'auto' or 'cpu'")
    name = settings.vlm_dtype
    if name == "auto":
        name = "float16" if device.startswith("cuda") else "float32"
    if device == "cpu" and name == "float16":
        log.warning("float16 on CPU is slow and poorly supported; using float32")
        name = "float32"
    return device, getattr(torch, name)


@dataclass
class EncodedImage:
    features: Any  # BaseModelOutputWithPooling from model.get_image_features (pooler_output = packed features)
    n_image_tokens: int
    image_size: tuple[int, int]
    prefix_ids: Any = None  # token ids of the prompt prefix ending with the image tokens
    prefix_cache: Any = None  # DynamicCache holding exactly that prefix
    expansion: str = ""  # the text replacing the prompt's one image placeholder


class _TimedStreamer:
    """TextIteratorStreamer that also records when the first generated token arrived."""

    def __new__(cls, tokenizer: Any, timeout: float | None = None) -> Any:
        from transformers import TextIteratorStreamer

        class Timed(TextIteratorStreamer):
            first_token_at: float | None = None
            n_tokens: int = 0

            def put(self, value: Any) -> None:
                was_prompt = self.skip_prompt and self.next_tokens_are_prompt
                super().put(value)
                if not was_prompt:
                    self.n_tokens += int(value.numel()) if hasattr(value, "numel") else 1
                    if self.first_token_at is None:
                        self.first_token_at = time.perf_counter()

        return Timed(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)


def _crop(cache: Any, keep: int) -> None:
    """Cut a KV cache back to its first ``keep`` positions (transformers wants a negative count)."""
    extra = cache.get_seq_length() - keep
    if extra > 0:
        cache.crop(-extra)


class TransformersBackend:
    name = "transformers"
    _shared: ClassVar[dict[tuple, TransformersBackend]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        settings: Settings,
        *,
        model: Any = None,
        processor: Any = None,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        model_id: str | None = None,
        kv_prefix_cache: bool = True,
    ) -> None:
        from tools.vlm.adapters import get_adapter

        self.settings = settings
        self.profile = settings.model_profile
        self.family = get_adapter(str(getattr(settings, "vlm_family", "radvlm")))  # loading facts only
        tiny_id = {"radvlm": "tiny-random-llava-onevision"}.get(self.family.family, f"tiny-random-{self.family.family}")
        self.model_id = model_id or (tiny_id if self.profile == "tiny" else settings.vlm_model_id)
        self._model = model
        self._processor = processor
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._cache: OrderedDict[Hashable, EncodedImage] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_entries = cache_entries
        self.kv_prefix_cache = kv_prefix_cache
        self._last_prefix_hit = False
        self.device: str | None = None
        self.weights: str | None = None  # the loaded weights' revision (or the tiny model's seed), once loaded
        self.counts: dict[str, int] = {"encodes": 0, "prefills": 0}  # vision-tower runs, image-prefix prefills

    @classmethod
    def shared(cls, settings: Settings) -> TransformersBackend:
        """One instance (one loaded model) per process and configuration."""
        key = (
            settings.model_profile, getattr(settings, "vlm_family", "radvlm"), settings.vlm_model_id,
            settings.vlm_device, settings.vlm_dtype,
            str(settings.hf_cache_dir), str(settings.data_dir),
        )
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(settings)
            return cls._shared[key]

    # ------------------------------------------------------------------ loading
    def load(self) -> tuple[Any, Any]:
        if self._model is not None and self._processor is not None:
            return self._model, self._processor
        with self._load_lock:
            if self._model is None or self._processor is None:
                self._model, self._processor = self._load()
                settle()
        return self._model, self._processor

    def _load(self) -> tuple[Any, Any]:
        device, dtype = resolve_device_dtype(self.settings)
        self.device = device
        from tools.vlm.backends import hf_models

        if self.profile == "tiny":
            model, processor = hf_models.load_tiny(self.family.tiny_loader, self.settings.data_dir)
            self.weights = hf_models.tiny_weights(self.family.tiny_loader)
            return model.to(device), processor
        from tools.vlm.weights import _fix, local_model_dir

        name = self.family.display_name
        path, missing = local_model_dir(self.settings)
        if path is None:
            raise ModelUnavailable(f"{name} weights are not available: {missing}. Fix: {_fix(self.settings)}.")
        from transformers import AutoProcessor

        t0 = time.perf_counter()
        try:
            kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
            if device.startswith("cuda"):
                kwargs["device_map"] = {"": device}
            model = hf_models.load_class(self.family.hf_class).from_pretrained(str(path), **kwargs).eval()
            if not device.startswith("cuda"):
                model = model.to(device)
            processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise ModelUnavailable(f"could not load {name} from {path}: {type(exc).__name__}: {exc}") from exc
        from tools.provenance import snapshot_revision

        self.weights = snapshot_revision(path)
        log.info("loaded %s on %s (%s) in %.1f s", self.model_id, device, dtype, time.perf_counter() - t0)
        return model, processor

    # ------------------------------------------------------------------ cache
    def cache_clear(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def cache_info(self) -> dict[str, int]:
        with self._cache_lock:
            return {"entries": len(self._cache), "max_entries": self.cache_entries}

    def _cache_get(self, key: Hashable | None) -> EncodedImage | None:
        if key is None:
            return None
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _seed(self, key: Hashable | None) -> EncodedImage | None:
        """A new entry for ``key`` built from another entry of the same study: the image features
        (they depend on the pixels alone), plus the KV prefix when that entry is the study's shared
        one (its prefix holds the image and the adapter's fixed text, never a user's words)."""
        if not isinstance(key, CacheKey):
            return None
        shared = CacheKey(None, key.study, shared=True)
        with self._cache_lock:
            source = self._cache.get(shared)
            if source is None:
                source = next((v for k, v in self._cache.items() if isinstance(k, CacheKey) and k.study == key.study), None)
            if source is None:
                return None
            seeded = EncodedImage(source.features, source.n_image_tokens, source.image_size, expansion=source.expansion)
            if source is self._cache.get(shared) and not key.shared:
                seeded.prefix_ids, seeded.prefix_cache = source.prefix_ids, source.prefix_cache
        self._cache_put(key, seeded)
        return seeded

    def _cache_put(self, key: Hashable | None, value: EncodedImage) -> None:
        if key is None or self.cache_entries <= 0:
            return
        with self._cache_lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)

    def encode(self, image: Image.Image) -> EncodedImage:
        """Processor (anyres tiling) + vision tower + projector, once per image."""
        import torch

        from tools.vlm.backends.hf_models import feature_kwargs, image_expansion

        model, processor = self.load()
        inputs = processor(images=image, text=processor.image_token, return_tensors="pt")
        n_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
        with torch.inference_mode():
            feats = model.get_image_features(**feature_kwargs(model, inputs), return_dict=True)
        return EncodedImage(feats, n_tokens, image.size, expansion=image_expansion(processor, n_tokens))

    def encoded_image(self, image: Image.Image, cache_key: Hashable | None) -> tuple[EncodedImage, bool, float]:
        """The image's encoding from the per-thread cache, else encoded and cached: (encoded, hit, encode s).
        Call under ``_gen_lock`` (single and batched generation share it)."""
        encoded = self._cache_get(cache_key) or self._seed(cache_key)
        if encoded is not None:
            return encoded, True, 0.0
        t0 = time.perf_counter()
        encoded = self.encode(image)
        self.counts["encodes"] += 1
        self._cache_put(cache_key, encoded)
        return encoded, False, time.perf_counter() - t0

    def expanded_prompt(self, turns: list[ChatTurn], encoded: EncodedImage) -> str:
        """The rendered prompt with its one image placeholder replaced by the image's token run."""
        _, processor = self.load()
        text = self.render(turns)
        token = processor.image_token
        if text.count(token) != 1:
            raise BackendError(f"the prompt must hold exactly one {token} placeholder, found {text.count(token)}")
        return text.replace(token, encoded.expansion or token * encoded.n_image_tokens)

    # ------------------------------------------------------------------ prompts
    def render(self, turns: list[ChatTurn]) -> str:
        """The chat-template text: image + text in the first user turn, text elsewhere. The content order
        follows ``ChatTurn.image_first``; a template may still place the image itself (LLaVA-OneVision's
        renders images before text whatever the order)."""
        _, processor = self.load()
        conv: list[dict[str, Any]] = []
        image_done = False
        for turn in turns:
            content: list[dict[str, str]] = [{"type": "text", "text": turn.text}]
            if turn.role == "user" and not image_done:  # the adapter decides the order per task
                content.insert(0 if turn.image_first else 1, {"type": "image"})
                image_done = True
            conv.append({"role": turn.role, "content": content})
        template = None
        if not getattr(processor, "chat_template", None):  # older exports ship none: use LLaVA-OneVision's
            from tools.vlm.tiny import CHAT_TEMPLATE as template
        return processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False, chat_template=template)

    # ------------------------------------------------------------------ KV prefix
    def _prefix(self, model: Any, encoded: EncodedImage, input_ids: Any, *, store: bool) -> Any:
        """A DynamicCache holding the prompt up to its last image token: the cached one when the
        prompt starts with the same tokens, else computed now (and kept if ``store``)."""
        import torch
        from transformers import DynamicCache

        positions = (input_ids[0] == model.config.image_token_id).nonzero()
        if positions.numel() == 0:
            return None
        end = int(positions.max()) + 1
        head = input_ids[:, :end]
        if encoded.prefix_cache is not None and encoded.prefix_ids is not None and \
                encoded.prefix_ids.shape == head.shape and bool((encoded.prefix_ids == head).all()):
            self._last_prefix_hit = True
            return encoded.prefix_cache
        self._last_prefix_hit = False
        from tools.vlm.backends.hf_models import token_types, with_cache

        cache = DynamicCache(config=model.config.text_config)
        self.counts["prefills"] += 1
        with torch.inference_mode():
            model(input_ids=head, attention_mask=torch.ones_like(head), use_cache=True, **with_cache(model, cache),
                  mm_encoder_outputs={"image": encoded.features}, logits_to_keep=1, **token_types(model, head))
        if store:
            encoded.prefix_ids, encoded.prefix_cache = head, cache
        else:
            encoded.prefix_ids = head
        return cache

    # ------------------------------------------------------------------ generation
    def generate_batch(self, image: Image.Image, conversations: list[list[ChatTurn]], *,
                       cache_key: Hashable | None = None, max_new_tokens: int | None = None,
                       min_new_tokens: int | None = None,
                       cancel: threading.Event | None = None) -> list[GenerationResult]:
        """Several conversations about one image in one ``generate`` (backends/transformers_batch.py)."""
        from tools.vlm.backends.transformers_batch import generate_batch

        return generate_batch(self, image, conversations, cache_key=cache_key, max_new_tokens=max_new_tokens,
                              min_new_tokens=min_new_tokens, cancel=cancel)

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
    ) -> GenerationResult:
        """One generation. ``cancel`` (set on timeout) or the reader's Stop of the turn (``tools.stop``) ends it
        at the next token and frees the model."""
        import torch

        from tools.vlm.backends import hf_models

        t0 = time.perf_counter()
        cancel = with_turn_stop(cancel)  # read here: the generation thread below has no run context
        if cancel is not None and cancel.is_set():
            raise BackendError("generation cancelled before it started (the call timed out or the turn was stopped)")
        model, processor = self.load()
        max_new = int(max_new_tokens or self.settings.vlm_max_new_tokens)
        with self._gen_lock:
            t_enc = time.perf_counter()  # time to first token counts from here (lock held)
            encoded, hit, encode_s = self.encoded_image(image, cache_key)
            text = self.expanded_prompt(turns, encoded)
            enc = hf_models.tokenize(processor.tokenizer, text)
            input_ids = enc["input_ids"].to(model.device)
            attention_mask = enc["attention_mask"].to(model.device)
            self._last_prefix_hit = False
            prefix = self._prefix(model, encoded, input_ids, store=cache_key is not None) if self.kv_prefix_cache else None
            prefix_hit = self._last_prefix_hit
            streamer = _TimedStreamer(processor.tokenizer)
            gen_kwargs: dict[str, Any] = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "max_new_tokens": max_new,
                "do_sample": False,
                "streamer": streamer,
                "pad_token_id": processor.tokenizer.pad_token_id,
                **hf_models.token_types(model, input_ids),
            }
            # A sliding-window cache (Gemma 3) cannot be cropped back once past its window: generate on a copy.
            working = copy.deepcopy(prefix) if prefix is not None and hf_models.sliding(model) else prefix
            if working is not None:  # the image tokens are already in the KV cache
                gen_kwargs.update(hf_models.with_cache(model, working))
            else:
                gen_kwargs["mm_encoder_outputs"] = {"image": encoded.features}
            if min_new_tokens:
                gen_kwargs["min_new_tokens"] = min(int(min_new_tokens), max_new)
            if cancel is not None:
                gen_kwargs["stopping_criteria"] = cancel_criteria(cancel)
            errors: list[BaseException] = []
            outputs: list[Any] = []

            def _run() -> None:
                try:
                    with torch.inference_mode():
                        outputs.append(model.generate(**gen_kwargs))
                except BaseException as exc:  # surfaced in the caller's thread below
                    errors.append(exc)
                    streamer.end()

            worker = threading.Thread(target=_run, name="vlm-generate", daemon=True)
            worker.start()
            pieces: list[str] = []
            for piece in streamer:
                pieces.append(piece)
                if on_token is not None and piece:
                    try:
                        on_token(piece)
                    except Exception as exc:  # a broken sink must not kill generation
                        log.warning("on_token callback failed: %s", exc)
                        on_token = None
            worker.join()
            if prefix is not None and working is prefix:
                _crop(prefix, int(encoded.prefix_ids.shape[1]))
            if errors:
                raise BackendError(f"generation failed: {type(errors[0]).__name__}: {errors[0]}") from errors[0]
            if cancel is not None and cancel.is_set():
                raise BackendError("generation cancelled (the call timed out or the turn was stopped); "
                                   "the model is free again")
            new_ids = outputs[0][0, input_ids.shape[1]:].tolist() if outputs else []
            count, ended = hf_models.answer_length(new_ids, hf_models.eos_ids(model))
        done = time.perf_counter()
        ttft = (streamer.first_token_at - t_enc) if streamer.first_token_at else None
        return GenerationResult(
            text="".join(pieces).strip(),
            truncated=not ended and count >= max_new,
            cache_hit=hit,
            kv_prefix_hit=prefix_hit,
            prompt_tokens=int(input_ids.shape[1]),
            new_tokens=streamer.n_tokens,
            ttft_s=ttft,
            latency_s=done - t0,
            encode_s=encode_s,
        )
