"""`python -m bench` / `make bench`: run every benchmark module and print one summary table.

Each bench/<name>.py exposes ``run(quick: bool = False) -> list[dict]`` with rows
{benchmark, metric, value, unit, baseline, ratio, target, note}. A module that is missing a
``run`` or fails becomes an error row: one broken benchmark never hides the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import numbers
import os
import pkgutil
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BENCH_DIR = Path(__file__).resolve().parent
SEPARATE = ("load",)
"""Benchmarks with a make target of their own (they start servers and run for minutes): `make bench-load`."""
COLUMNS = ("benchmark", "metric", "value", "unit", "baseline", "ratio", "target", "note")


def discover(package_dir: Path = BENCH_DIR) -> list[str]:
    """Module names in bench/ that look like benchmarks (not private, not this runner)."""
    return sorted(
        m.name for m in pkgutil.iter_modules([str(package_dir)])
        if not m.name.startswith("_") and m.name not in ("common", *SEPARATE)
    )


def run_module(name: str, *, quick: bool, package: str = "bench") -> tuple[list[dict[str, Any]], float]:
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f"{package}.{name}")
        if not hasattr(module, "run"):
            return [_error_row(name, "module has no run(quick) function")], time.perf_counter() - t0
        rows = list(module.run(quick=quick))
        bad = [r for r in rows if not isinstance(r, dict)]
        if bad:
            return [_error_row(name, f"run() returned {len(bad)} row(s) that are not dicts, e.g. {bad[0]!r:.80}")], \
                time.perf_counter() - t0
        for row in rows:
            row.setdefault("benchmark", name)
        return rows, time.perf_counter() - t0
    except (Exception, SystemExit) as exc:  # one failing benchmark (even one calling sys.exit) must not stop the rest
        tb = traceback.format_exc(limit=3)
        return [_error_row(name, f"{type(exc).__name__}: {exc}", tb)], time.perf_counter() - t0


def _error_row(name: str, message: str, detail: str = "") -> dict[str, Any]:
    return {"benchmark": name, "metric": "ERROR", "value": None, "unit": "", "baseline": None,
            "ratio": None, "target": None, "note": message, "detail": detail}


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        info["torch"] = None
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH_DIR.parent, timeout=5
        ).stdout.strip() or None
    except Exception:
        info["git_commit"] = None
    return info


def _fmt(v: Any) -> str:
    """A table cell; escaped, since rich would swallow '[cardiomegaly]' in 'f1[cardiomegaly]' as markup."""
    from rich.markup import escape

    if v is None:
        return ""
    if isinstance(v, numbers.Real) and not isinstance(v, (bool, int)):  # float and numpy floats
        return f"{float(v):.4g}"
    return escape(str(v))


def met(row: dict[str, Any]) -> str:
    """Whether a row met its target, when the target is machine-checkable ('>= 0.8', '<= 2 ms')."""
    target, value = row.get("target"), row.get("value")
    if not target or value is None:
        return ""
    parts = str(target).split()
    if len(parts) < 2 or parts[0] not in {">=", "<=", ">", "<"}:
        return ""
    try:
        bound = float(parts[1].rstrip("x%"))
    except ValueError:
        return ""
    compare = row.get("ratio") if str(parts[1]).endswith("x") and row.get("ratio") is not None else value
    try:
        compare = float(compare)
    except (TypeError, ValueError):  # a malformed row must not crash the summary
        return ""
    ok = {">=": compare >= bound, "<=": compare <= bound, ">": compare > bound, "<": compare < bound}[parts[0]]
    return "yes" if ok else "NO"


def print_table(rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cxr-agent benchmarks  (cpus={info.get('cpus')}, cuda={info.get('cuda')}, commit={info.get('git_commit')})")
    for col in (*COLUMNS[:7], "met", "note"):
        table.add_column(col, overflow="fold", max_width=60 if col == "note" else None)
    for row in rows:
        style = "red" if row.get("metric") == "ERROR" or met(row) == "NO" else None
        table.add_row(*(_fmt(row.get(c)) for c in COLUMNS[:7]), met(row), _fmt(row.get("note")), style=style)
    Console(width=200).print(table)


def main(argv: list[str] | None = None, *, package_dir: Path = BENCH_DIR, package: str = "bench") -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute per module)")
    parser.add_argument("--only", action="append", default=[], help="run only this module (repeatable)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "summary.json")
    args = parser.parse_args(argv)

    names = args.only or discover(package_dir)
    info = machine_info()  # before the modules run: one may change torch's thread count
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        module_rows, seconds = run_module(name, quick=args.quick, package=package)
        rows.extend(module_rows)
        timings[name] = round(seconds, 2)
    print_table(rows, info)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "quick": args.quick, "module_seconds": timings,
               "rows": [{**r, "met": met(r)} for r in rows]}
    args.out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"[bench] wrote {args.out}", file=sys.stderr)
    return 1 if any(r.get("metric") == "ERROR" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
