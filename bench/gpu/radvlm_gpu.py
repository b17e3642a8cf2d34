"""RadVLM on a GPU, measured with random weights of its exact architecture (no download, no network).

Built on the spot from the config in ../shared/STACK.md: LLaVA-OneVision with a Qwen2-7B text
model (hidden 3584, 28 layers, 28 heads, 4 KV heads, intermediate 18944, vocab 152064) and a
SigLIP-so400m vision tower (hidden 1152, 27 layers, 16 heads, intermediate 4304, patch 14,
image 384), anyres_max_9, bf16. Random weights cost the same FLOPs as trained ones; only the
words are noise, so generation is forced to a fixed length (no EOS).

Measures, each after a warm-up:
  report      HF ``generate`` for a report turn: time to first token (vision tower + ~3.7k-token
              prefill of a 512x512 study) and decode tokens/s;
  follow-up   the same question on a cached image: the KV cache of the prompt prefix that ends
              with the image tokens is reused (what tools/vlm/backends/transformers_backend.py's
              kv_prefix_cache does), so only the new question is prefilled;
  verify x6   six yes/no re-asks about one study: serial full prompts, serial on the cached
              prefix, and one batched ``generate`` of six;
  retrieval   exact top-k over 1M normalised 384-d vectors (MiniLM size): torch matmul + topk on
              the GPU vs the CPU (FAISS IndexFlatIP when faiss is importable, else torch on CPU).

    python bench/gpu/radvlm_gpu.py                      # the real sizes (GPU; ~16 GB bf16)
    python bench/gpu/radvlm_gpu.py --tiny --device cpu  # a shrunken config: checks the script in seconds

Self-contained on purpose (torch, transformers, numpy, tokenizers only): the GPU machine has
its own torch and transformers and none of this project's other dependencies.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

IMAGE_TOKEN = "<image>"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN, "<video>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% if message['role'] != 'assistant' %}{{ '\n' }}{% endif %}{{ c['text'] }}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
REPORT_PROMPT = "Could you provide a detailed report for this chest X-ray?"
FOLLOW_UP = "Is there any evidence of cardiomegaly?"
VERIFY = ["pleural effusion", "cardiomegaly", "pneumothorax", "consolidation", "atelectasis", "edema"]


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the real run and the shrunken check."""

    text: dict[str, int]
    vision: dict[str, int]
    crop: int
    image_px: int
    report_tokens: int
    answer_tokens: int
    vectors: int
    dim: int = 384


REAL = Sizes(
    text=dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
              intermediate_size=18944, vocab_size=152064, max_position_embeddings=32768),
    vision=dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304,
                patch_size=14, image_size=384),
    crop=384, image_px=512, report_tokens=256, answer_tokens=16, vectors=1_000_000,
)
TINY = Sizes(
    text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, vocab_size=2048, max_position_embeddings=4096),
    vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                patch_size=14, image_size=28),
    crop=28, image_px=64, report_tokens=8, answer_tokens=3, vectors=20_000,
)


def build_tokenizer() -> Any:
    """A byte-level BPE with Qwen2's special tokens and chat template (ids < 1024 fit any vocab)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [REPORT_PROMPT, FOLLOW_UP, "The heart size is normal. The lungs are clear. No pleural effusion."] * 20
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    try:
        from transformers import Qwen2TokenizerFast as Fast
    except ImportError:  # transformers versions without the alias
        Fast = PreTrainedTokenizerFast
    hf = Fast(tokenizer_object=tok, unk_token=None, bos_token=None, eos_token="<|im_end|>",
              pad_token="<|endoftext|>", additional_special_tokens=SPECIALS[1:])
    hf.chat_template = CHAT_TEMPLATE
    hf.padding_side = "left"
    return hf


def build(sizes: Sizes, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tok = build_tokenizer()
    crop, patch = sizes.crop, sizes.vision["patch_size"]
    pinpoints = [[crop * i, crop * j] for i in range(1, 7) for j in range(1, 7)]
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size={"height": crop, "width": crop},
                                                     image_grid_pinpoints=pinpoints,
                                                     image_mean=[0.5] * 3, image_std=[0.5] * 3),
        video_processor=LlavaOnevisionVideoProcessor(size={"height": crop, "width": crop},
                                                     image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=tok, num_image_tokens=(crop // patch) ** 2, vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE, vision_aspect_ratio="anyres_max_9",
    )
    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(**sizes.text, rope_theta=1_000_000.0, tie_word_embeddings=False),
        vision_config=SiglipVisionConfig(**sizes.vision),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        image_grid_pinpoints=pinpoints, vision_aspect_ratio="anyres_max_9",
        vision_feature_select_strategy="full", vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaOnevisionForConditionalGeneration._from_config(config, dtype=dtype)
    model.eval()
    model.generation_config.eos_token_id = None  # random weights: force full-length answers
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, processor


def study(px: int) -> Any:
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (px, px, 3), dtype=np.uint8))


def prompt(processor: Any, text: str) -> str:
    return processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}], add_generation_prompt=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


WARMUP = 1


def timed(fn, device: str, repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls after WARMUP untimed ones, and the last result."""
    out = None
    for _ in range(WARMUP):
        out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_vlm(sizes: Sizes, device: str, dtype: torch.dtype, repeats: int) -> list[dict[str, Any]]:
    from transformers import DynamicCache

    model, processor = build(sizes, device, dtype)
    image = study(sizes.image_px)
    inputs = processor(images=image, text=prompt(processor, REPORT_PROMPT), return_tensors="pt").to(device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    n_prompt = int(inputs["input_ids"].shape[1])
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    rows: list[dict[str, Any]] = []

    def gen(n: int, **kw: Any) -> Any:
        with torch.inference_mode():
            return model.generate(**kw, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    ttft, _ = timed(lambda: gen(1, **inputs), device, repeats)
    full, out = timed(lambda: gen(sizes.report_tokens, **inputs), device, repeats)
    made = int(out.shape[1]) - n_prompt
    rows += [row("report", "time to first token", ttft * 1e3, "ms", f"{n_prompt} prompt tokens ({n_image} image)"),
             row("report", "decode", (made - 1) / max(full - ttft, 1e-9), "tok/s", f"{made} new tokens, batch 1"),
             row("report", "whole turn", full, "s", f"{made} tokens")]

    # The image prefix's KV cache, as the product keeps it per (thread, study).
    ids = inputs["input_ids"]
    end = int((ids[0] == model.config.image_token_id).nonzero().max()) + 1
    prefix = DynamicCache(config=model.config.text_config) if _cache_takes_config() else DynamicCache()
    with torch.inference_mode():
        model(input_ids=ids[:, :end], pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"],
              attention_mask=torch.ones_like(ids[:, :end]), use_cache=True, **with_cache(model, prefix))
    follow = processor.tokenizer(prompt(processor, FOLLOW_UP), return_tensors="pt")["input_ids"]
    follow_ids = _with_image_tokens(follow, ids[:, :end], model.config.image_token_id).to(device)

    def cached(n: int, question_ids: Any) -> Any:
        return gen(n, input_ids=question_ids, attention_mask=torch.ones_like(question_ids),
                   **with_cache(model, copy.deepcopy(prefix)))

    cold, _ = timed(lambda: gen(1, **processor(images=image, text=prompt(processor, FOLLOW_UP),
                                               return_tensors="pt").to(device, dtype)), device, repeats)
    hit, _ = timed(lambda: cached(1, follow_ids), device, repeats)
    n_check = min(8, sizes.report_tokens)
    follow_full = processor(images=image, text=prompt(processor, FOLLOW_UP), return_tensors="pt").to(device, dtype)
    same = torch.equal(cached(n_check, follow_ids)[:, -n_check:].cpu(), gen(n_check, **follow_full)[:, -n_check:].cpu())
    rows += [row("follow-up", "cached answer == uncached answer", float(same), "bool",
                 f"first {n_check} greedy tokens (bf16 may flip near-ties on random weights)")]
    rows += [row("follow-up", "time to first token, image cached", hit * 1e3, "ms",
                 f"{int(follow_ids.shape[1]) - end} new prompt tokens", baseline=cold * 1e3),
             row("follow-up", "time to first token, no cache", cold * 1e3, "ms", "vision tower + full prefill")]

    # Six verification re-asks about one study.
    questions = [f"Is there {f}? Answer yes or no, and give its bounding box." for f in VERIFY]
    singles = [processor(images=image, text=prompt(processor, q), return_tensors="pt").to(device, dtype)
               for q in questions]
    batch = processor(images=[image] * len(questions), text=[prompt(processor, q) for q in questions],
                      return_tensors="pt", padding=True).to(device, dtype)
    on_prefix = [_with_image_tokens(processor.tokenizer(prompt(processor, q), return_tensors="pt")["input_ids"],
                                    ids[:, :end], model.config.image_token_id).to(device) for q in questions]
    n = sizes.answer_tokens
    serial, _ = timed(lambda: [gen(n, **s) for s in singles], device, repeats)
    serial_cached, _ = timed(lambda: [cached(n, q) for q in on_prefix], device, repeats)
    batched, out = timed(lambda: gen(n, **batch), device, repeats)
    assert out.shape[0] == len(questions)
    rows += [row("verify x6", "serial, full prompts", serial, "s", f"{n} tokens each"),
             row("verify x6", "serial, cached image prefix", serial_cached, "s", "one generate per question on the cached prefix", baseline=serial),
             row("verify x6", "batched generate", batched, "s", "one generate, batch 6", baseline=serial)]
    return rows  # the model is freed with this frame


def with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """The KV cache under the keyword this transformers takes (as tools/vlm/backends/hf_models.py)."""
    import inspect

    return {"cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values": cache}


def _cache_takes_config() -> bool:
    import inspect

    from transformers import DynamicCache

    return "config" in inspect.signature(DynamicCache.__init__).parameters


def _with_image_tokens(question_ids: Any, prefix_ids: Any, image_token_id: int) -> Any:
    """The cached prefix (which ends with the image tokens) + what follows the one <image> token in
    a tokenised single-image prompt: the same token sequence the full prompt would expand to."""
    pos = int((question_ids[0] == image_token_id).nonzero()[0])
    return torch.cat([prefix_ids.cpu(), question_ids[:, pos + 1:]], dim=1)


def bench_retrieval(sizes: Sizes, device: str, repeats: int, k: int = 10) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((sizes.vectors, sizes.dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    rows: list[dict[str, Any]] = []
    xb = torch.from_numpy(base).to(device) if device.startswith("cuda") else None
    for nq in (1, 64):
        q = base[rng.choice(sizes.vectors, nq, replace=False)] + 0.01
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        cpu_name, cpu_fn = _cpu_search(base, q, k)
        cpu_t, (cpu_ids) = timed(cpu_fn, "cpu", repeats)
        row_cpu = row("retrieval", f"exact top-{k}, {nq} quer{'y' if nq == 1 else 'ies'}, {cpu_name}",
                      cpu_t * 1e3, "ms", f"{sizes.vectors:,} x {sizes.dim}")
        rows.append(row_cpu)
        if xb is not None:
            xq = torch.from_numpy(q).to(device)
            gpu_t, idx = timed(lambda xq=xq: torch.topk(xq @ xb.T, k, dim=1).indices, device, repeats)
            same = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(idx.cpu().numpy(), cpu_ids, strict=True)]))
            rows.append(row("retrieval", f"exact top-{k}, {nq} quer{'y' if nq == 1 else 'ies'}, GPU torch fp32",
                            gpu_t * 1e3, "ms", f"overlap with CPU {same:.3f}", baseline=cpu_t * 1e3))
    return rows


def _cpu_search(base: np.ndarray, q: np.ndarray, k: int):
    try:
        import faiss

        index = faiss.IndexFlatIP(base.shape[1])
        index.add(base)
        return f"FAISS CPU ({faiss.omp_get_max_threads()} threads)", lambda: index.search(q, k)[1]
    except ImportError:
        xb, xq = torch.from_numpy(base), torch.from_numpy(q)
        return (f"torch CPU ({torch.get_num_threads()} threads; no faiss here)",
                lambda: torch.topk(xq @ xb.T, k, dim=1).indices.numpy())


def row(group: str, metric: str, value: float, unit: str, note: str = "", baseline: float | None = None) -> dict:
    ratio = (baseline / value) if baseline and value else None
    return {"benchmark": group, "metric": metric, "value": round(value, 3), "unit": unit,
            "speedup_vs_baseline": round(ratio, 2) if ratio else None, "note": note}


def machine(device: str) -> dict[str, Any]:
    info = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count(), "device": device}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="shrunken config: checks the script on a CPU in seconds")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls before each measurement")
    ap.add_argument("--only", choices=["vlm", "retrieval"], help="run one part")
    ap.add_argument("--json", help="write the rows and the machine here")
    args = ap.parse_args(argv)
    sizes = TINY if args.tiny else REAL
    global WARMUP
    WARMUP = max(0, args.warmup)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: use --device cpu (with --tiny for a quick check)", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if args.only in (None, "vlm"):
        rows += bench_vlm(sizes, args.device, dtype, args.repeats)
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    if args.only in (None, "retrieval"):
        rows += bench_retrieval(sizes, args.device, args.repeats)
    result = {"config": "tiny" if args.tiny else "RadVLM (Qwen2-7B + SigLIP-so400m, anyres_max_9)",
              "machine": machine(args.device), "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    print(f"\n{result['config']} on {result['machine'].get('gpu', args.device)} ({result['seconds']} s)\n")
    print(f"| {'benchmark':<10} | {'metric':<52} | {'value':>10} | {'unit':<5} | {'speedup':>7} | note")
    print(f"|{'-' * 12}|{'-' * 54}|{'-' * 12}|{'-' * 7}|{'-' * 9}|------")
    for r in rows:
        sp = f"{r['speedup_vs_baseline']}x" if r["speedup_vs_baseline"] else ""
        print(f"| {r['benchmark']:<10} | {r['metric']:<52} | {r['value']:>10} | {r['unit']:<5} | {sp:>7} | {r['note']}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
