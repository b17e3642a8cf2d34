"""A tiny random-weight MedGemma stand-in (Gemma 3 architecture), built entirely offline.

Same classes as ``google/medgemma-4b-it`` (Gemma3ForConditionalGeneration: SigLIP vision tower,
average-pooled projector to a fixed number of image tokens, Gemma 3 text model) with Gemma 3's real
chat template and processor (``<start_of_image>`` expanded to the image's soft tokens), a few hundred
thousand random parameters. It exercises the MedGemma adapter and every backend path in tests and the
demo profile; its output is gibberish by construction and callers label it (DEMO_WARNING).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TINY_MEDGEMMA_ID = "cxr-agent/tiny-random-medgemma"
SEED = 4321
CROP, PATCH, TOKENS_PER_IMAGE = 56, 14, 4  # 4x4 patches pooled to 2x2 = 4 image tokens (real: 896/14 -> 256)
BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
START_TURN, END_TURN = "<start_of_turn>", "<end_of_turn>"
BOI, EOI, IMAGE_SOFT = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
SPECIAL_TOKENS = [PAD, EOS, BOS, UNK, START_TURN, END_TURN, BOI, EOI, IMAGE_SOFT]

# Gemma 3's chat template (as shipped with gemma-3-*-it and medgemma-4b-it): the system text is
# prepended to the first user turn; the assistant role is "model"; parts render in content order.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}"
    "{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}{%- endfor -%}"
    "{%- else -%}{{ raise_exception('Invalid content type') }}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

_lock = threading.Lock()
_memo: dict[str, tuple[Any, Any]] = {}


def build_tokenizer(vocab_size: int = 1024) -> Any:
    """Byte-level BPE on report text with Gemma 3's special tokens (bos added like Gemma's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from tools.vlm.adapters.medgemma import sample_prompts
    from tools.vlm.tiny import iu_report_sentences

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(iu_report_sentences() + sample_prompts(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                       special_tokens=[(BOS, tok.token_to_id(BOS))])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=END_TURN, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=[START_TURN, END_TURN, BOI, EOI, IMAGE_SOFT],
        extra_special_tokens={"image_token": IMAGE_SOFT, "boi_token": BOI, "eoi_token": EOI},
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_processor() -> Any:
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    image_processor = Gemma3ImageProcessor(size={"height": CROP, "width": CROP}, image_mean=[0.5] * 3,
                                           image_std=[0.5] * 3, do_pan_and_scan=False)
    return Gemma3Processor(image_processor=image_processor, tokenizer=build_tokenizer(), chat_template=CHAT_TEMPLATE,
                           image_seq_length=TOKENS_PER_IMAGE)


def build_model(processor: Any) -> Any:
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tok = processor.tokenizer
    text_config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=8192, sliding_window=512,
        initializer_range=0.02, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.convert_tokens_to_ids(END_TURN),
    )
    vision_config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=CROP, patch_size=PATCH)
    config = Gemma3Config(
        text_config=text_config, vision_config=vision_config, mm_tokens_per_image=TOKENS_PER_IMAGE,
        boi_token_index=tok.convert_tokens_to_ids(BOI), eoi_token_index=tok.convert_tokens_to_ids(EOI),
        image_token_index=tok.convert_tokens_to_ids(IMAGE_SOFT), initializer_range=0.02,
    )
    torch.manual_seed(SEED)
    model = Gemma3ForConditionalGeneration(config).eval()
    gc = model.generation_config
    gc.eos_token_id = [text_config.eos_token_id, tok.convert_tokens_to_ids(EOS)]
    gc.pad_token_id = tok.pad_token_id
    gc.bos_token_id = tok.bos_token_id
    return model


def tiny_medgemma_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "tiny-medgemma"


def tiny_medgemma_status(settings: Any) -> Any:
    """The catalogue's "tiny-medgemma" entry: built (saved under the data dir) or still to build."""
    from tools.base import WeightStatus

    loc = tiny_medgemma_dir(settings.data_dir)
    built = (loc / "config.json").is_file() and any(loc.glob("*.safetensors"))
    return WeightStatus(
        name="vlm: tiny random MedGemma / Gemma 3 (demo)", kind="vlm", present=built, location=str(loc),
        fix=None if built else "cxr-agent setup",
        detail="random weights, no diagnostic value" + ("" if built else "; not built yet (else built on first use)"),
    )


def load_tiny_medgemma(data_dir: Path | None = None) -> tuple[Any, Any]:
    """(model, processor): per-process memo, else ``data_dir/tiny-medgemma``, else built (and saved)."""
    key = str(data_dir)
    with _lock:
        if key in _memo:
            return _memo[key]
        from transformers import AutoProcessor, Gemma3ForConditionalGeneration

        target = tiny_medgemma_dir(data_dir) if data_dir else None
        pair: tuple[Any, Any] | None = None
        if target is not None and (target / "config.json").exists():
            try:
                pair = (Gemma3ForConditionalGeneration.from_pretrained(target).eval(), AutoProcessor.from_pretrained(target))
            except Exception as exc:  # a stale or partial save: rebuild it
                log.warning("rebuilding tiny MedGemma at %s (%s)", target, exc)
        if pair is None:
            processor = build_processor()
            pair = (build_model(processor), processor)
            if target is not None:
                try:
                    target.mkdir(parents=True, exist_ok=True)
                    pair[0].save_pretrained(target)
                    processor.save_pretrained(target)
                except OSError as exc:
                    log.warning("could not cache the tiny MedGemma at %s: %s", target, exc)
        _memo[key] = pair
        return pair
