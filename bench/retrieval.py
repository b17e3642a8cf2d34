"""Report retrieval: embedding throughput, query latency and recall@10 of the FAISS indexes, IU and 1M.

Vectors. The IU corpus rows use the real MiniLM embeddings of the 3,927 IU X-ray reports (cached under
bench/results/.cache once computed). The 1M rows use vectors with the structure of real ones: every IU
embedding jittered into 255 near copies (x + N(0, sigma^2/d), re-normalised; sigma = 0.5, so a copy keeps
cosine ~0.89 with its report, about the spacing of real nearest neighbours, median 0.92) = 1,001,385 vectors;
queries are fresh jittered copies. Uniform random vectors would be useless: every ANN index scores ~0 on them.
Recall@10 is measured against exact search (IndexFlatIP) on the same vectors; latency is single-query
(nq=1) wall time, p50/p95 over the query set; every ANN row carries the exact-search p50 as its baseline
(ratio = speedup) and the STACK.md reference configuration IVF1024/nprobe16 is re-measured in the same run.

Million-report ingestion (the product path, tools.retrieval.index.ReportIndex.build): the corpus is an iterator
(tools.retrieval.corpus streams CSV/JSONL/dirs row by row); reports are labelled and embedded one batch (256) at a
time, their text/labels/metadata appended to SQLite (reports.sqlite) and their vectors to a raw float32 file
(vectors.f32), then dropped. The FAISS index is made afterwards from a read-only memmap of vectors.f32:
IVF training reads a random sample (32 points per list), adding streams 65,536-row chunks. Peak memory is
one batch of texts + the FAISS index itself (1.5 GB for 1M x 384 IVF-Flat), never the corpus text. The
"product IVF build" row below runs that same function (tools.retrieval.index._make_faiss) on the 1M memmap.

The machine is shared (2 cores, ~8 other jobs): timings are noisy; ratios within one run are the figure.
Set CXR_BENCH_HNSW=0 to skip the (slow to build) HNSW rows.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = "retrieval"
CACHE = Path(__file__).resolve().parent / "results" / ".cache"
SIGMA = 0.5
COPIES = 255
TARGET_RECALL = 0.98
TARGET_P50_MS = 2.0


def _row(metric: str, value: float, unit: str, baseline: float | None = None, target: str | None = None,
         note: str = "", ratio: float | None = None) -> dict[str, Any]:
    if ratio is None and baseline not in (None, 0) and value is not None:
        ratio = value / baseline
    return {"benchmark": BENCH, "metric": metric, "value": round(float(value), 4), "unit": unit,
            "baseline": None if baseline is None else round(float(baseline), 4),
            "ratio": None if ratio is None else round(float(ratio), 3), "target": target, "note": note}


def _latencies(index, queries: np.ndarray, k: int = 10) -> tuple[float, float]:
    index.search(queries[:1], k)  # warm
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None, :], k)
        lat.append(time.perf_counter() - t0)
    return float(np.percentile(lat, 50) * 1000), float(np.percentile(lat, 95) * 1000)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def _jitter(base: np.ndarray, rng: np.random.Generator, sigma: float = SIGMA) -> np.ndarray:
    x = base + rng.normal(0.0, sigma / np.sqrt(base.shape[1]), base.shape).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _iu_embeddings(embedder, reports) -> np.ndarray:
    """All IU report embeddings, cached on disk by corpus fingerprint + embedder."""
    from tools.retrieval.corpus import corpus_fingerprint

    key = f"iu-{corpus_fingerprint(reports)[:16]}-{embedder.name.replace('/', '_')}.npy"
    path = CACHE / key
    if path.exists():
        return np.load(path)
    vecs = embedder.encode([r.text for r in reports], batch_size=64)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


def _embedding_rows(embedder, texts: list[str]) -> list[dict[str, Any]]:
    single = texts[:16]
    t0 = time.perf_counter()
    for t in single:
        embedder.encode([t])
    one = len(single) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    embedder.encode(texts, batch_size=64)
    batched = len(texts) / (time.perf_counter() - t0)
    return [
        _row("embedding throughput, batch 64", batched, "texts/s", baseline=one,
             note=f"{embedder.name} on {embedder.device}, {len(texts)} IU reports; baseline = one text per call"),
        _row("query embedding latency", 1000 / one, "ms", note="one report-length query, batch 1"),
    ]


Config = tuple[str, int, list[tuple[str, dict[str, Any]]]]  # (factory, train size, [(label, params), ...])


def _ann_rows(scale: str, X: np.ndarray, Q: np.ndarray, configs: list[Config], *, exact_queries: int) -> list[dict[str, Any]]:
    """Exact baseline + each index (built once, then swept over its search params): recall@10, p50/p95, build."""
    import faiss

    d = X.shape[1]
    rows: list[dict[str, Any]] = []
    flat = faiss.IndexFlatIP(d)
    flat.add(X)
    _, truth = flat.search(Q, 10)
    exact_p50, exact_p95 = _latencies(flat, Q[:exact_queries])
    rows.append(_row(f"{scale}: exact IndexFlatIP p50", exact_p50, "ms",
                     note=f"n={len(X):,}, p95 {exact_p95:.2f} ms over {exact_queries} queries; recall 1 by definition"))
    del flat
    ref_recall = None
    rng = np.random.default_rng(1)
    for factory, train_size, sweeps in configs:
        t0 = time.perf_counter()
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            sample = X[np.sort(rng.choice(len(X), size=min(len(X), train_size), replace=False))]
            index.train(sample)
            del sample
        index.add(X)
        build = time.perf_counter() - t0
        for label, params in sweeps:
            ps = faiss.ParameterSpace()
            for name, value in params.items():
                ps.set_index_parameter(index, name, value)
            _, found = index.search(Q, 10)
            rec = _recall(found, truth)
            p50, p95 = _latencies(index, Q)
            is_ref = label.startswith("reference")
            if is_ref:
                ref_recall = rec
            meets = rec >= TARGET_RECALL and p50 <= TARGET_P50_MS
            rows.append(_row(f"{scale}: {label} recall@10", rec, "fraction", baseline=None if is_ref else ref_recall,
                             target=f">= {TARGET_RECALL}" if scale == "1M" else None,
                             note=f"{factory} {params}; vs exact top-10" + ("" if is_ref else "; baseline = reference IVF1024/16")))
            rows.append(_row(f"{scale}: {label} p50", p50, "ms", baseline=exact_p50, ratio=exact_p50 / p50 if p50 else None,
                             target=f"<= {TARGET_P50_MS} ms" if scale == "1M" else None,
                             note=f"p95 {p95:.2f} ms; ratio = speedup over exact; build {build:.1f}s"
                             + ("; meets target" if scale == "1M" and meets else "")))
        del index
    return rows


def _configs(n: int, exact_index_max: int, *, full: bool) -> list[Config]:
    from tools.retrieval.index import choose_index_params

    p = choose_index_params(n, exact_index_max)
    nlist = int(p.factory[3:].split(",")[0])
    out: list[Config] = [
        ("IVF1024,Flat", 1024 * 32, [("reference IVF1024 nprobe16", {"nprobe": 16})]),
        (p.factory, p.train_size or 0, [
            (f"IVF{nlist} nprobe{max(1, p.nprobe // 2)}", {"nprobe": max(1, p.nprobe // 2)}),
            (f"product default IVF{nlist} nprobe{p.nprobe}", {"nprobe": p.nprobe}),
            *([(f"IVF{nlist} nprobe{2 * p.nprobe}", {"nprobe": 2 * p.nprobe})] if full else []),
        ]),
    ]
    if full:
        out.append((f"IVF{nlist},SQ8", p.train_size or 0, [(f"IVF{nlist},SQ8 nprobe{p.nprobe}", {"nprobe": p.nprobe})]))
        if os.environ.get("CXR_BENCH_HNSW", "1") != "0":
            out.append(("HNSW32", 0, [("HNSW32 efSearch128", {"efSearch": 128}), ("HNSW32 efSearch256", {"efSearch": 256})]))
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import faiss

    from tools.retrieval.corpus import iu_xray_reports
    from tools.retrieval.embedder import get_embedder
    from tools.retrieval.index import _make_faiss, choose_index_params

    rows: list[dict[str, Any]] = []
    embedder = get_embedder(device="cpu")
    if quick:  # 256 reports: their embeddings are the bases (no full-corpus pass, no cache needed)
        reports = list(iu_xray_reports(limit=256))
        rows += _embedding_rows(embedder, [r.text for r in reports])
        base = embedder.encode([r.text for r in reports])
    else:
        reports = list(iu_xray_reports())
        rows += _embedding_rows(embedder, [r.text for r in reports[:512]])
        base = _iu_embeddings(embedder, reports)
    rng = np.random.default_rng(0)

    # IU corpus itself: the product's exact index (what `kb build` makes by default).
    q_iu = _jitter(base[rng.choice(len(base), 200)], rng, 0.3)
    iu = faiss.IndexFlatIP(base.shape[1])
    iu.add(base)
    p50, p95 = _latencies(iu, q_iu)
    t0 = time.perf_counter()
    for q in q_iu:
        np.argpartition(-(base @ q), 10)[:10]
    numpy_ms = (time.perf_counter() - t0) / len(q_iu) * 1000
    label = "IU corpus" if not quick else f"IU sample ({len(base)})"
    rows.append(_row(f"{label}: exact IndexFlatIP p50", p50, "ms", baseline=numpy_ms, ratio=numpy_ms / p50,
                     note=f"n={len(base):,} (product default below exact_index_max), p95 {p95:.3f} ms, recall 1; baseline numpy matmul+argpartition"))

    copies = max(1, round(100_000 / len(base))) if quick else COPIES
    X = np.concatenate([_jitter(base, rng) for _ in range(copies)])
    Q = _jitter(base[rng.choice(len(base), 100 if quick else 300)], rng)
    scale = f"{len(X) // 1000}k" if quick else "1M"
    if quick:
        rows += _ann_rows(scale, X, Q, _configs(len(X), 50_000, full=False), exact_queries=len(Q))
        return rows
    rows += _ann_rows(scale, X, Q, _configs(len(X), 200_000, full=True), exact_queries=30)

    # The product's own IVF build path on a 1M memmap (what `kb build` runs above exact_index_max).
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vectors.f32"
        X.tofile(path)
        del X
        n = path.stat().st_size // (4 * base.shape[1])
        mm = np.memmap(path, dtype=np.float32, mode="r", shape=(n, base.shape[1]))
        params = choose_index_params(len(mm), 200_000)
        t0 = time.perf_counter()
        index = _make_faiss(mm, params, None)
        rows.append(_row("1M: product IVF build from vectors.f32 memmap", time.perf_counter() - t0, "s",
                         note=f"tools.retrieval.index._make_faiss, {params.factory}, trained on {params.train_size:,} sampled vectors"))
        del index, mm
    return rows


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    rows = run(quick="--quick" in sys.argv)
    table = Table(title="retrieval benchmark")
    for col in ("metric", "value", "unit", "baseline", "ratio", "target", "note"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*(("" if r[c] is None else str(r[c])) for c in ("metric", "value", "unit", "baseline", "ratio", "target", "note")))
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
