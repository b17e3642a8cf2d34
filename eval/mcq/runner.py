"""Run a multiple-choice benchmark: one fresh thread per question, results appended as JSONL, resumable.

Why one thread per question by default: an agent that keeps one memory across the questions of a
case answers later questions from earlier ones (and their answers), which is not what a single
question measures. ``thread_per="case"`` keeps one thread per case, its earlier questions and our
answers passed as history, and every row says so (``config.thread_per``).

Each row: id, case, categories, gold letter, our letter (None: abstained or not answered),
``decided_by``, the chosen option's confidence, ``status`` (answered / abstained / skipped / error),
the thread id, and how often each tool was called. A rerun with the same configuration skips ids
already in the file; another configuration in the same file is refused (one file, one arm).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agents.turn.multiple_choice import MultipleChoice, MultipleChoiceQuestion
from eval.mcq.adapters import BenchItem

ThreadPer = Literal["question", "case"]


class RunConfigError(ValueError):
    """A run that cannot start as asked (unknown tool, a results file of another configuration)."""


@dataclass(frozen=True)
class RunConfig:
    bench: str
    tools: tuple[str, ...]
    thread_per: ThreadPer = "question"
    profile: str = "real"  # the model profile: "tiny" results are wiring checks, not numbers

    def as_row(self) -> dict[str, Any]:
        return {"bench": self.bench, "tools": list(self.tools), "thread_per": self.thread_per, "profile": self.profile}


def select_tools(available: dict[str, Any], wanted: Iterable[str] | None) -> tuple[str, ...]:
    """The tools of an ablation arm (``--tools vlm,classifier``), in the graph's order."""
    if wanted is None:
        return tuple(available)
    names = [w.strip() for w in wanted if w.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise RunConfigError(f"unknown tool(s) {', '.join(unknown)}: this graph has {', '.join(available) or 'none'}")
    if not names:
        raise RunConfigError("--tools names no tool")
    return tuple(n for n in available if n in names)


def max_concurrency(settings: Any) -> int:
    """How many questions may run at once: the in-process VLM generates one answer at a time (more
    threads only queue on it); a served VLM takes as many as the tool pool allows."""
    if getattr(settings, "vlm_backend", "transformers") == "openai":
        return max(1, int(getattr(settings, "tool_workers", 4)))
    return 1


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file (a torn last line from an interrupted run is ignored)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def choose(items: list[BenchItem], *, limit: int | None = None, sample: int | None = None,
           seed: int = 0) -> list[BenchItem]:
    """``sample``: that many questions drawn at random (seeded, file order kept); ``limit``: the first n."""
    if sample is not None and sample < len(items):
        keep = set(random.Random(seed).sample(range(len(items)), sample))
        items = [it for i, it in enumerate(items) if i in keep]
    return items[:limit] if limit is not None else items


def _case_thread(bench: str, case: str) -> str:
    return "mcq-case-" + hashlib.sha256(f"{bench}\0{case}".encode()).hexdigest()[:16]


def run(items: list[BenchItem], answerer: MultipleChoice, config: RunConfig, out: Path, *,
        concurrency: int = 1, on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Answer every item not already in ``out``; returns the new rows (also appended to ``out``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = read_rows(out)
    other = {json.dumps(r.get("config"), sort_keys=True) for r in old} - {json.dumps(config.as_row(), sort_keys=True)}
    if other:
        raise RunConfigError(f"{out} holds results of another configuration ({sorted(other)[0]}); "
                             "write this arm to another file")
    done = {r["id"] for r in old}
    todo = [it for it in items if it.id not in done]
    units: list[list[BenchItem]]
    if config.thread_per == "case":
        by_case: dict[str, list[BenchItem]] = {}
        for it in todo:
            by_case.setdefault(it.case_id, []).append(it)
        units = list(by_case.values())
    else:
        units = [[it] for it in todo]
    lock = threading.Lock()
    new: list[dict[str, Any]] = []

    def write(row: dict[str, Any]) -> None:
        with lock, out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            new.append(row)
        if on_done is not None:
            on_done(row)

    def work(unit: list[BenchItem]) -> None:
        history: list[dict[str, str]] = []
        for it in unit:
            thread_id = (_case_thread(config.bench, it.case_id) if config.thread_per == "case"
                         else f"mcq-{uuid.uuid4().hex}")
            row = answer_one(it, answerer, config, thread_id, history if config.thread_per == "case" else None)
            write(row)

    workers = max(1, concurrency)
    if workers == 1:
        for u in units:
            work(u)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, units))
    return new


def answer_one(it: BenchItem, answerer: MultipleChoice, config: RunConfig, thread_id: str,
               history: list[dict[str, str]] | None) -> dict[str, Any]:
    """One row; ``history`` (a case's shared thread) grows by this question and our answer."""
    row: dict[str, Any] = {"id": it.id, "case_id": it.case_id, "categories": list(it.categories), "gold": it.answer,
                           "letter": None, "decided_by": None, "confidence": None, "thread_id": thread_id,
                           "tools_called": {}, "config": config.as_row(), "options": sorted(it.options)}
    if it.skip:
        return {**row, "status": "skipped", "reason": it.skip, "thread_id": None}
    try:
        q = MultipleChoiceQuestion(question=it.question, options=it.options, images=list(it.images),
                                   context=it.context)
        ans = answerer.answer(q, thread_id=thread_id, history=history)
    except Exception as exc:  # one bad question (missing figure, undecodable file) never stops the run
        return {**row, "status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    if history is not None:
        history += [{"role": "user", "content": it.question},
                    {"role": "assistant", "content": ans.letter or "no answer"}]
    return {**row, "letter": ans.letter, "decided_by": ans.decided_by, "confidence": ans.confidence,
            "status": "abstained" if ans.letter is None else "answered", "reason": ans.reason,
            "tools_called": ans.tools_called,
            "option_scores": {o.letter: o.score for o in ans.options},
            "decisions": [{"finding": d.finding, "status": d.status.value, "confidence": d.confidence}
                          for d in ans.decisions]}


def answerer_for(graph: Any, tools: Iterable[str] | None = None) -> tuple[MultipleChoice, tuple[str, ...]]:
    """A multiple-choice answerer over a compiled graph's tools (an ablation arm: ``tools``), ingesting
    images through the graph's own store (its limits and de-identification)."""
    from graph import runtime

    rt = runtime(graph)
    names = select_tools(rt.tools, tools)
    answerer = MultipleChoice({n: rt.tools[n] for n in names}, lambda p: rt.studies.ingest(p)[1],
                              caps={n: rt.capabilities[n] for n in names if n in rt.capabilities},
                              settings=rt.settings, roles=rt.roles)
    return answerer, names
