"""VLM benchmark: decode speed and time to first token per backend, and the encoded-study cache.

Profile ``tiny`` (default here): random-weight LLaVA-OneVision on CPU — the figures measure the
plumbing (streaming, HTTP/SSE, cache), not RadVLM. With CXR_AGENT_MODEL_PROFILE=real (and the
weights present, e.g. on a GPU machine) the same script measures RadVLM itself.

Rows:
- transformers decode tokens/s vs plain ``model.generate`` on the same inputs (our streaming
  wrapper's overhead);
- time to first token of a follow-up turn with the encode cache vs without (small geometry);
- follow-up turn latency at RadVLM's REAL image geometry (SigLIP 384/14, anyres_max_9: a
  512x512 image -> ~3,700 image tokens) with vs without the cache;
- N verification re-asks in one batched generate vs N serial generates (real geometry, image cached);
- a report turn's three asks with the image first (shared KV prefix) vs instruction first;
- openai backend (a local chat-completions server over HTTP + SSE, backed by the same model):
  tokens/s and time to first token vs the in-process transformers backend.
Output length is forced with min_new_tokens (random weights stop at random places otherwise).
"""

from __future__ import annotations

import base64
import io
import json
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

BENCH = "vlm"


def _row(metric: str, value: float, unit: str, baseline: float | None, note: str,
         target: str | None = None, higher_is_better: bool = True) -> dict[str, Any]:
    ratio = None
    if baseline:
        ratio = round(value / baseline, 3) if higher_is_better else round(baseline / value, 3) if value else None
    return {"benchmark": BENCH, "metric": metric, "value": round(value, 3), "unit": unit,
            "baseline": None if baseline is None else round(baseline, 3), "ratio": ratio,
            "target": target, "note": note}


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _xray_like(size: int) -> Image.Image:
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size] / size
    arr = (0.3 + 0.4 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) * 8) + 0.4 * np.exp(-((xx - 0.7) ** 2 + (yy - 0.5) ** 2) * 8))
    return Image.fromarray((np.clip(arr, 0, 1) * 255).astype("uint8")).convert("RGB")


def _plain_generate_tps(backend: Any, image: Image.Image, turns: list, n_new: int) -> float:
    """Tokens/s of processor + model.generate with no wrapper (the reference)."""
    import torch

    model, processor = backend.load()
    prompt = backend.render(turns)
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(**inputs, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
        return n_new / (time.perf_counter() - t0)


class _Server:
    """A minimal chat-completions server (plain + SSE) around a transformers backend."""

    def __init__(self, backend: Any) -> None:
        from tools.vlm.prompts import ChatTurn

        def handler_factory() -> type[BaseHTTPRequestHandler]:
            class H(BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"

                def log_message(self, *a: object) -> None:
                    pass

                def do_POST(self) -> None:  # noqa: N802
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    turns, image = [], None
                    for m in body["messages"]:
                        c = m["content"]
                        if isinstance(c, str):
                            turns.append(ChatTurn(m["role"], c))
                            continue
                        text = "".join(p.get("text", "") for p in c if p["type"] == "text")
                        for p in c:
                            if p["type"] == "image_url":
                                raw = base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
                                image = Image.open(io.BytesIO(raw)).convert("RGB")
                        turns.append(ChatTurn(m["role"], text))
                    kw = {"max_new_tokens": body.get("max_tokens"), "min_new_tokens": body.get("min_tokens"),
                          "cache_key": None}  # no server-side cache: compare like with like
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()

                    def send(payload: str) -> None:
                        data = f"data: {payload}\n\n".encode()
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()

                    backend.generate(image, turns, **kw, on_token=lambda piece: send(json.dumps(
                        {"choices": [{"index": 0, "delta": {"content": piece}}]})))
                    send("[DONE]")
                    self.wfile.write(b"0\r\n\r\n")

            return H

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_factory())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run(quick: bool = False, settings: Any = None) -> list[dict[str, Any]]:
    from cxr_agent.settings import Settings
    from tools.vlm.backends.openai_backend import OpenAIBackend
    from tools.vlm.backends.transformers_backend import TransformersBackend
    from tools.vlm.prompts import ChatTurn

    if settings is None:
        from cxr_agent.settings import get_settings
        from tools.vlm.weights import vlm_weight_status

        settings = get_settings().model_copy(update={"vlm_backend": "transformers"})
        if settings.model_profile != "real" or not vlm_weight_status(settings).present:
            settings = Settings(model_profile="tiny", data_dir=Path(tempfile.gettempdir()) / "cxr-agent-bench")
    reps = 2 if quick else 5
    if settings.model_profile == "tiny":
        import torch

        torch.set_num_threads(1)  # tiny tensors: one thread beats an OpenMP team on a shared CPU
    n_new = 16 if quick else 64
    profile = settings.model_profile
    note = f"profile={profile}" + (" (random weights: plumbing speed, not RadVLM)" if profile == "tiny" else "")
    rows: list[dict[str, Any]] = []

    backend = TransformersBackend(settings)
    model, processor = backend.load()
    backend.device = str(model.device)
    image = _xray_like(256)
    turns = [ChatTurn("user", "Write the radiology report for this chest X-ray.")]
    follow = [*turns, ChatTurn("assistant", "The lungs are clear."), ChatTurn("user", "Is there an effusion?")]
    backend.generate(image, turns, max_new_tokens=4)  # warm-up

    # 1. end-to-end tokens/s from the image (no cache): ours (streaming wrapper) vs plain generate
    ours, plain, decode, ttft_hit, ttft_miss = [], [], [], [], []
    for i in range(reps):
        backend.cache_clear()
        miss = backend.generate(image, follow, cache_key=("b", i), max_new_tokens=n_new, min_new_tokens=n_new)
        hit = backend.generate(image, follow, cache_key=("b", i), max_new_tokens=n_new, min_new_tokens=n_new)
        ours.append(n_new / (miss.latency_s or 1e-9))
        decode.append((n_new - 1) / max(1e-9, (hit.latency_s or 0) - (hit.ttft_s or 0)))
        ttft_miss.append(miss.ttft_s or 0.0)
        ttft_hit.append(hit.ttft_s or 0.0)
        plain.append(_plain_generate_tps(backend, image, follow, n_new))
    rows.append(_row("transformers tokens/s from the image, ours vs plain generate", _median(ours), "tok/s",
                     _median(plain), f"{note}; {n_new} new tokens, greedy, device={backend.device}; "
                     f"decode-only rate {_median(decode):.1f} tok/s"))
    rows.append(_row("transformers follow-up time to first token, cache hit vs miss", _median(ttft_hit) * 1000,
                     "ms", _median(ttft_miss) * 1000, f"{note}; small tiny geometry", higher_is_better=False))

    # 2. the encoded-study cache at RadVLM's real image geometry: none / image features / + KV prefix
    if profile == "tiny":
        from tools.vlm.tiny import load_tiny

        m, p = load_tiny(settings.data_dir, geometry="real")
    else:
        m, p = model, processor
    variants = {kv: TransformersBackend(settings, model=m, processor=p, kv_prefix_cache=kv) for kv in (False, True)}
    for v in variants.values():
        v.device = backend.device
    img512 = _xray_like(512)
    n_short = 8
    variants[True].generate(img512, turns, max_new_tokens=2)  # warm-up
    times: dict[str, list[float]] = {"none": [], "features": [], "features+kv": []}
    tokens = 0
    for i in range(1 if quick else reps - 1):
        for kv, label in ((False, "features"), (True, "features+kv")):
            v = variants[kv]
            v.cache_clear()
            v.generate(img512, turns, cache_key=("r", i), max_new_tokens=n_short, min_new_tokens=n_short)
            hit = v.generate(img512, follow, cache_key=("r", i), max_new_tokens=n_short, min_new_tokens=n_short)
            assert hit.cache_hit and hit.kv_prefix_hit == kv
            times[label].append(hit.latency_s or 0.0)
        miss = variants[False].generate(img512, follow, cache_key=None, max_new_tokens=n_short, min_new_tokens=n_short)
        times["none"].append(miss.latency_s or 0.0)
        tokens = int(miss.prompt_tokens or 0)
    n_img = int(p(images=img512, text=p.image_token, return_tensors="pt")["input_ids"].shape[1])
    geo = (f"{note}; 512x512 image -> {n_img} image tokens (SigLIP 384/14, anyres_max_9), prompt {tokens} tokens, "
           f"{n_short} new tokens")
    none_ms = _median(times["none"]) * 1000
    rows.append(_row("follow-up turn at real geometry: image-feature cache vs none", _median(times["features"]) * 1000,
                     "ms", none_ms, geo + "; skips image preprocessing + vision tower", higher_is_better=False))
    rows.append(_row("follow-up turn at real geometry: features + KV prefix cache vs none",
                     _median(times["features+kv"]) * 1000, "ms", none_ms,
                     geo + "; also skips the prefill of the image tokens", higher_is_better=False))

    # 3. re-asks: N conflicts in one batched generate (shared image KV prefix) vs N serial generates
    n_conf = 4 if quick else 7
    questions = [[ChatTurn("user", f"Is there any {f}?")] for f in
                 ("pleural effusion", "pneumothorax", "cardiomegaly", "edema", "consolidation", "atelectasis",
                  "fracture")[:n_conf]]
    kvb = variants[True]
    kvb.cache_clear()
    kvb.generate(img512, turns, cache_key="reask", max_new_tokens=2)  # the report turn cached the image
    serial_t, batch_t = [], []
    for _ in range(1 if quick else reps - 1):
        t0 = time.perf_counter()
        for q in questions:
            kvb.generate(img512, q, cache_key="reask", max_new_tokens=n_short, min_new_tokens=n_short)
        serial_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        kvb.generate_batch(img512, questions, cache_key="reask", max_new_tokens=n_short, min_new_tokens=n_short)
        batch_t.append(time.perf_counter() - t0)
    rows.append(_row(f"{n_conf} verification re-asks: one batch vs serial", _median(batch_t) * 1000, "ms",
                     _median(serial_t) * 1000, geo.split(", prompt")[0] + f"; {n_short} new tokens each, image cached",
                     higher_is_better=False))

    # 4. image order for a report turn's three asks (report, classification, detection): image first shares
    # the cached KV prefix; instruction first (the authors' content order, if a template honoured it) could
    # reuse only the image features and must prefill the image tokens for every ask.
    asks = [[ChatTurn("user", t)] for t in ("Provide a radiology report for this exam.",
                                            "Are there any abnormalities on this Chest X-ray?",
                                            "Identify any abnormalities or lesions present on this X-ray and provide "
                                            "their exact locations.")]
    order_t: dict[bool, list[float]] = {True: [], False: []}
    for i in range(1 if quick else reps - 1):
        for kv in (True, False):
            v = variants[kv]
            v.cache_clear()
            t0 = time.perf_counter()
            for a in asks:
                v.generate(img512, a, cache_key=("o", i), max_new_tokens=n_short, min_new_tokens=n_short)
            order_t[kv].append(time.perf_counter() - t0)
    rows.append(_row("report turn's 3 asks: image first (shared KV prefix) vs instruction first (features only)",
                     _median(order_t[True]) * 1000, "ms", _median(order_t[False]) * 1000,
                     geo.split(", prompt")[0] + "; LLaVA-OneVision's template renders the image first either way",
                     higher_is_better=False))

    # 5. openai backend over HTTP/SSE vs in-process
    server = _Server(backend)
    try:
        oa_settings = settings.model_copy(update={"vlm_backend": "openai", "openai_base_url": server.url,
                                                  "openai_model": backend.model_id})
        client = OpenAIBackend(oa_settings)
        tps, ttft, direct_tps, direct_ttft = [], [], [], []
        for _ in range(reps):
            res = client.generate(image, follow, max_new_tokens=n_new, min_new_tokens=n_new, on_token=lambda _p: None)
            tps.append(n_new / (res.latency_s or 1e-9))
            ttft.append(res.ttft_s or 0.0)
            backend.cache_clear()
            d = backend.generate(image, follow, max_new_tokens=n_new, min_new_tokens=n_new, on_token=lambda _p: None)
            direct_tps.append(n_new / (d.latency_s or 1e-9))
            direct_ttft.append(d.ttft_s or 0.0)
        client.close()
    finally:
        server.close()
    rows.append(_row("openai backend tokens/s (HTTP+SSE) vs in-process", _median(tps), "tok/s", _median(direct_tps),
                     f"{note}; local chat-completions server on 127.0.0.1 backed by the same model"))
    rows.append(_row("openai backend time to first token vs in-process", _median(ttft) * 1000, "ms",
                     _median(direct_ttft) * 1000, f"{note}; includes PNG/base64 encode and HTTP",
                     higher_is_better=False))
    return rows


if __name__ == "__main__":
    import sys

    from rich.console import Console
    from rich.table import Table

    result = run(quick="--quick" in sys.argv)
    table = Table(title="cxr-agent VLM benchmark")
    for col in ("metric", "value", "unit", "baseline", "ratio", "note"):
        table.add_column(col)
    for r in result:
        table.add_row(r["metric"], str(r["value"]), r["unit"], str(r["baseline"]), str(r["ratio"]), r["note"])
    Console().print(table)
