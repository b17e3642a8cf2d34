"""Retrieval tool: the prior reports most similar to this turn's report (or question), as a prior.

Neighbours come from tools.retrieval.index.ReportIndex. Their labels were computed once, at build time,
by the report labeler; this tool only counts them. What it returns is a *prior from other patients'
reports*, never evidence about this image: the reconciler treats source "retrieval" as such.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

from knowledge.evidence import Evidence, FindingCall, RetrievedReport, Status
from knowledge.vocabulary import FINDINGS, display_name
from tools.base import ToolRequest, builtin_intents
from tools.provenance import index_id

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.retrieval.index import ProgressFn, ReportIndex

log = logging.getLogger(__name__)

PRESENT_FRACTION = 0.5


def neighbor_calls(neighbors: list[RetrievedReport], *, k: int | None = None) -> list[FindingCall]:
    """One FindingCall per finding that at least one neighbour states as present.

    score = fraction of the neighbours stating it (score_kind "neighbor_fraction"); status is
    ``present`` when at least half of them do, ``uncertain`` otherwise. Never ``absent``: a finding
    the neighbours do not mention says nothing about this image. ``no_finding`` is reported like any
    other label (the fraction of neighbours that are normal studies). The reconciler uses these as a
    prior only; they never outvote the image sources.
    """
    n = k or len(neighbors)
    if n <= 0:
        return []
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for nb in neighbors:
        for label in dict.fromkeys(nb.labels):
            counts[label] += 1
            examples.setdefault(label, []).append(nb.id)
    calls = []
    for finding in FINDINGS:
        c = counts.get(finding, 0)
        if not c:
            continue
        frac = c / n
        what = "are normal studies" if finding == "no_finding" else f"mention {display_name(finding).lower()}"
        calls.append(
            FindingCall(
                finding=finding,
                status=Status.present if frac >= PRESENT_FRACTION else Status.uncertain,
                score=round(frac, 4),
                score_kind="neighbor_fraction",
                source="retrieval",
                text=f"{c} of {n} similar prior reports {what} (e.g. {', '.join(examples[finding][:3])})",
            )
        )
    return calls


def _log_progress(stage: str, done: int, total: int | None) -> None:
    if total and (done == total or done % 512 == 0):
        log.info("building the default report index: %s %d/%d", stage, done, total)


class RetrievalTool:
    """CxrTool over a ReportIndex. The index is opened (or, when absent, built from settings.corpus)
    lazily on first use, once, under a lock; ``progress`` receives (stage, done, total) during that build
    (the app shows it); without one, progress goes to the log."""

    name = "retrieval"
    intents = builtin_intents("retrieval")  # from the one intent table (tools/base.py)
    image_source = False  # neighbours are a prior, never a vote
    needs_draft = True  # queries with the report writer's draft when there is one
    label = "retrieval"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        index: ReportIndex | None = None,
        progress: ProgressFn | None = None,
        build_if_missing: bool = True,
    ) -> None:
        if settings is None:
            from cxr_agent.settings import get_settings

            settings = get_settings()
        self.settings = settings
        self._index = index
        self.progress = progress
        self.build_if_missing = build_if_missing
        self._lock = threading.Lock()
        self._error: str | None = None

    # -- index -----------------------------------------------------------------------------------
    def get_index(self, progress: ProgressFn | None = None) -> ReportIndex:
        """The open index: loaded from settings.resolved_index_dir, built first if there is none
        (``progress``, else the tool's own callback, else the log, hears how the build goes)."""
        if self._index is not None:
            return self._index
        with self._lock:
            if self._index is None:
                self._index = self._open_or_build(progress)
            return self._index

    def _open_or_build(self, progress: ProgressFn | None = None) -> ReportIndex:
        from tools.retrieval.index import ReportIndex

        path = self.settings.resolved_index_dir
        if ReportIndex.exists(path) or not self.build_if_missing:
            return ReportIndex.load(path, self.settings)
        from tools.retrieval.corpus import iu_xray_reports, load_corpus

        spec = self.settings.corpus
        total = None
        if spec.strip().lower() in ("iu-xray", "iu_xray", "iu"):
            total = sum(1 for _ in iu_xray_reports())
        log.info("no report index at %s: building one from corpus %r (first use; this takes a while)", path, spec)
        return ReportIndex.build(
            load_corpus(spec), self.settings, index_dir=path, corpus_spec=spec,
            progress=progress or self.progress or _log_progress, total=total,
        )

    @property
    def ready(self) -> bool:
        """True once the index is open (no build pending)."""
        return self._index is not None

    # -- tool ------------------------------------------------------------------------------------
    def run(self, request: ToolRequest) -> Evidence:
        t0 = time.perf_counter()
        query_source = "draft_report" if (request.draft_report or "").strip() else "text"
        query = (request.draft_report if query_source == "draft_report" else request.text) or ""
        if not query.strip():
            return Evidence.failure(self.name, "no text to search with (neither a draft report nor a question)",
                                    meta={"query_source": query_source})
        settings = request.settings or self.settings
        k = max(1, int(settings.retrieval_k))
        try:
            index = self.get_index(request.on_progress)
            hits = index.search(query, k)[0]
        except Exception as exc:  # never raise into the graph
            log.warning("retrieval failed: %s", exc)
            return Evidence.failure(
                self.name, f"{type(exc).__name__}: {exc}", latency_ms=(time.perf_counter() - t0) * 1000,
                meta={"query_source": query_source, "k": k},
            )
        neighbors = [h.to_retrieved() for h in hits]
        return Evidence(
            tool=self.name,
            calls=neighbor_calls(neighbors),
            neighbors=neighbors,
            latency_ms=(time.perf_counter() - t0) * 1000,
            meta={
                "model_id": index.embedder_name,
                "weights": None,  # the embedder's weights are pinned by the index (index_id), not hashed here
                "prompt_id": None,  # the query is the draft report or the user's text, never a prompt
                "index_id": index_id(index.manifest),
                "embedder": index.embedder_name,
                "index_type": index.index_type,
                "index_count": index.count,
                "corpus": index.manifest.get("corpus", {}).get("spec"),
                "labeler_version": index.manifest.get("labeler_version"),
                "labels_stale": index.labels_stale,
                "k": k,
                "query_source": query_source,
                "prior_only": True,
            },
        )
