"""Classifier throughput: end to end (file -> Study -> preprocess -> forward -> calls) vs the raw
model forward alone on the same preprocessed tensors, at batch 1 and 8; preprocessing vs xrv's
own skimage pipeline; and the extra cost of a Grad-CAM heatmap per finding.

Tiny profile: torchxrayvision's DenseNet-121 architecture with RANDOM weights (same kernels and
sizes as the real model; the numbers mean speed only). Inputs: NIH 1024x1024 PNGs from the shared
data. Every figure carries its baseline measured in the same run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_REPO = Path(__file__).resolve().parents[1]
NOTE = "tiny profile: DenseNet-121@224 random weights"


def shared_data_dir() -> Path | None:
    for c in (os.environ.get("CXR_AGENT_SHARED_DATA"), _REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if c and Path(c, "README.md").exists():
            return Path(c)
    return None


def _ingest(path: Path):
    """The product's ingestion (tools.ingestion.loader.load_study), or PIL -> Study if that is unavailable."""
    try:
        from tools.ingestion.loader import load_study

        return load_study(path)
    except ImportError:
        import numpy as np
        from PIL import Image

        from tools.ingestion.study import Study

        with Image.open(path) as im:
            return Study.from_array(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)


def _best(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    """Best-of-N seconds after a warm-up (the machine is shared: the minimum is the least noisy)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def _torch_threads() -> int:
    """CXR_BENCH_TORCH_THREADS, else 1 when the machine is oversubscribed (load > cores): measured
    here, OpenMP's spinning makes 2 threads on 2 busy cores 10-20x slower than 1, and erratic."""
    import torch

    env = os.environ.get("CXR_BENCH_TORCH_THREADS")
    if env:
        torch.set_num_threads(int(env))
    elif hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)
    return torch.get_num_threads()


def _paired(a: Callable[[], Any], b: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> tuple[float, float]:
    """Best-of-N seconds for a and b, timed alternately so load drift hits both alike."""
    a()
    b()
    sync()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - t0)
    return min(ta), min(tb)


def _row(metric: str, value: float, unit: str, baseline: float | None, target: str | None, note: str) -> dict:
    ratio = (value / baseline) if baseline else None
    return {"benchmark": "classifier", "metric": metric, "value": round(value, 3), "unit": unit,
            "baseline": None if baseline is None else round(baseline, 3),
            "ratio": None if ratio is None else round(ratio, 3), "target": target, "note": note}


def run(quick: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as d:  # the tiny weights and heatmaps go, too
        return _run(quick, Path(d))


def _run(quick: bool, data_dir: Path) -> list[dict]:
    import torch

    from cxr_agent.settings import Settings
    from tools.classifier.tool import ClassifierTool, preprocess

    threads = _torch_threads()
    data = shared_data_dir()
    if data is None:
        return [_row("skipped", 0.0, "-", None, None, "shared data not found (set CXR_AGENT_SHARED_DATA)")]
    files = sorted((data / "nih_cxr14" / "images").glob("*.png"))[: 16 if quick else 32]
    repeats = 2 if quick else 3
    settings = Settings(model_profile="tiny", data_dir=data_dir)
    tool = ClassifierTool(settings)
    m = tool.model
    dev = m.device
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    note = f"{NOTE}; {len(files)} NIH PNGs 1024x1024; device {dev}; torch threads {threads}; best of {repeats}"

    studies = [_ingest(f) for f in files]
    tensors = torch.stack([preprocess(s, m.resolution)[0] for s in studies]).to(dev)

    def raw(bs: int) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                for i in range(0, len(tensors), bs):
                    m.head(m.features(tensors[i : i + bs]))
        return go

    def e2e_turns() -> None:  # one chat turn per study: ingest, then classify
        for f in files:
            tool.classify(_ingest(f))

    def e2e_sources(bs: int, workers: int) -> Callable[[], None]:  # batch path with read-ahead
        def go() -> None:
            tool.classify_sources(files, batch_size=bs, loader=_ingest, workers=workers)
        return go

    def e2e_sequential(bs: int) -> Callable[[], None]:  # batch path without read-ahead
        def go() -> None:
            for i in range(0, len(files), bs):
                tool.classify_batch([_ingest(f) for f in files[i : i + bs]], batch_size=bs)
        return go

    rows = []
    n = len(files)
    pair_note = note + "; value and baseline timed alternately (the machine is shared)"
    for bs in (1, 8):
        t_e2e, t_raw = _paired(e2e_sources(bs, 2), raw(bs), repeats, sync)
        rows.append(_row(f"end-to-end studies/s, batch {bs}, classify_sources read-ahead (baseline: raw forward)",
                         n / t_e2e, "studies/s", n / t_raw, ">= 0.8x raw", pair_note))
        if bs == 1:
            t_raw1 = t_raw
            t_turn, t_raw_b = _paired(e2e_turns, raw(1), repeats, sync)
            rows.append(_row("end-to-end studies/s, one chat turn per study: ingest then classify, no overlap "
                             "(baseline: raw forward, batch 1)", n / t_turn, "studies/s", n / t_raw_b, None, pair_note))
    if not quick:
        t_seq, t_raw8 = _paired(e2e_sequential(8), raw(8), repeats, sync)
        rows.append(_row("end-to-end studies/s, batch 8, no read-ahead (baseline: raw forward)",
                         n / t_seq, "studies/s", n / t_raw8, None, pair_note))

    # preprocessing: ours (torch antialiased bilinear) vs xrv's normalize + XRayCenterCrop + XRayResizer
    import torchxrayvision as xrv

    def ours() -> None:
        for s in studies:
            preprocess(s, m.resolution)

    crop, resize = xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(m.resolution)

    def theirs() -> None:
        for s in studies:
            resize(crop(xrv.utils.normalize(s.pixels, 1.0)[None]))

    t_ours, t_xrv = _best(ours, repeats, sync), _best(theirs, repeats, sync)
    rows.append(_row("preprocess ms/study (baseline: xrv skimage pipeline)", 1000 * t_ours / n, "ms",
                     1000 * t_xrv / n, "< 1x", note))
    t_ing = _best(lambda: [_ingest(f) for f in files], repeats, sync)
    rows.append(_row("ingest ms/study (baseline: raw forward ms/study, batch 1)", 1000 * t_ing / n, "ms",
                     1000 * t_raw1 / n, None, note + "; load_study: decode + sha256 id"))

    # heatmap: extra cost per finding over the classify() it builds on
    study = studies[0]
    inf = tool._infer([study])[0]
    findings = [tool.model.targets[i] for i in tool.model.trained_indices()][:3]
    t_cls = _best(lambda: tool.classify(study), repeats, sync)
    t_hm = _best(lambda: [tool._heatmap(study, inf, f) for f in findings], repeats, sync) / len(findings)
    rows.append(_row("heatmap extra ms per finding (baseline: classify ms, 1 study)", 1000 * t_hm, "ms",
                     1000 * t_cls, None, note + "; Grad-CAM reuses the forward's activations, incl. .npy save"))
    t_full = _best(lambda: tool.heatmap(study, findings[0]), repeats, sync)
    rows.append(_row("standalone heatmap() ms (baseline: classify ms, 1 study)", 1000 * t_full, "ms",
                     1000 * t_cls, None, note + "; includes its own forward"))
    return rows


if __name__ == "__main__":
    import sys

    from rich.console import Console
    from rich.table import Table

    result = run(quick="--quick" in sys.argv)
    table = Table(title="classifier benchmark")
    for col in ("metric", "value", "unit", "baseline", "ratio", "target", "note"):
        table.add_column(col, overflow="fold")
    for r in result:
        table.add_row(*(str(r[c]) if r[c] is not None else "-" for c in
                        ("metric", "value", "unit", "baseline", "ratio", "target", "note")))
    Console(width=200).print(table)
