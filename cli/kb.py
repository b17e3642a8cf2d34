"""`cxr-agent kb ...` commands: build, search and inspect the prior-report index.

Heavy libraries (sentence-transformers, faiss) are imported inside the commands so `cxr-agent --help`
stays fast.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


def _settings(embedder: str | None = None, index_dir: Path | None = None):
    from cxr_agent.settings import get_settings

    settings = get_settings()
    update = {}
    if embedder:
        update["embedder"] = embedder
    if index_dir is not None:
        update["index_dir"] = index_dir.expanduser()
    return settings.model_copy(update=update) if update else settings


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command("build")
def build(
    corpus: str = typer.Option(None, "--corpus", "-c", help="'iu-xray' (bundled), a .csv/.jsonl file or a directory of .txt reports (default: CXR_AGENT_CORPUS)."),
    embedder: str = typer.Option(None, "--embedder", "-e", help="Sentence-transformers model name or path (default: CXR_AGENT_EMBEDDER, the bundled MiniLM)."),
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Index only the first N reports."),
    text_column: str = typer.Option(None, "--text-column", help="Table column holding the report text (comma-separate to join several)."),
    id_column: str = typer.Option(None, "--id-column", help="Table column holding a report id."),
    index_dir: Annotated[Path | None, typer.Option("--index-dir", help="Where to write the index (default: CXR_AGENT_INDEX_DIR or <data dir>/index).")] = None,
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Reports embedded per batch."),
) -> None:
    """Build (or rebuild) the report index with a progress bar. Replaces the old index only when done."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from tools.retrieval.corpus import CorpusError, load_corpus
    from tools.retrieval.embedder import EmbedderUnavailable
    from tools.retrieval.index import ReportIndex

    settings = _settings(embedder, index_dir)
    spec = corpus or settings.corpus
    columns = [c.strip() for c in text_column.split(",") if c.strip()] if text_column else None
    text_arg = (columns[0] if len(columns) == 1 else tuple(columns)) if columns else None
    console = Console(stderr=True)
    try:
        found: Counter[str] = Counter()  # identifier-like text replaced by ___, counted while counting reports
        with console.status("counting reports…"):
            total = sum(1 for _ in load_corpus(spec, limit=limit, text_column=text_arg, id_column=id_column,
                                               identifiers=found))
        if total == 0:
            _fail(f"corpus {spec!r} has no report with text")
        with Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        ) as bar:
            tasks: dict[str, int] = {}

            def progress(stage: str, done: int, tot: int | None) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=tot)
                bar.update(tasks[stage], completed=done, total=tot)

            tasks["loading embedder"] = bar.add_task("loading embedder", total=1)
            from tools.retrieval.embedder import get_embedder

            emb = get_embedder(settings=settings)
            bar.update(tasks["loading embedder"], completed=1)
            index = ReportIndex.build(
                load_corpus(spec, limit=limit, text_column=text_arg, id_column=id_column), settings,
                embedder=emb, corpus_spec=str(spec), batch_size=batch_size, progress=progress, total=total,
            )
    except (CorpusError, EmbedderUnavailable, ValueError, OSError) as exc:
        _fail(str(exc))
    m = index.manifest
    if found:
        typer.echo("Replaced identifier-like text with ___ before indexing: "
                   + ", ".join(f"{n} {kind.replace('_', ' ')}(s)" for kind, n in sorted(found.items())) + ".")
    typer.echo(
        f"Indexed {index.count} reports ({m['index']['type']} index, embedder {m['embedder']}, "
        f"{m['dimension']}-d) at {index.path} in {m['build_seconds']:.1f}s"
    )


@app.command("search")
def search(
    text: str = typer.Argument(..., help="Report text or phrase to find similar prior reports for."),
    k: int = typer.Option(5, "-k", "--k", min=1, help="How many neighbours."),
    index_dir: Annotated[Path | None, typer.Option("--index-dir", help="Index location (default: CXR_AGENT_INDEX_DIR or <data dir>/index).")] = None,
) -> None:
    """Show the k most similar prior reports with their labels."""
    from rich.console import Console
    from rich.table import Table

    from tools.retrieval.embedder import EmbedderUnavailable
    from tools.retrieval.index import ReportIndex, ReportIndexError

    settings = _settings(index_dir=index_dir)
    try:
        manifest = ReportIndex.read_manifest(settings.resolved_index_dir)
        # Search with the embedder the index was built with unless the user configured another one.
        index = ReportIndex.load(settings.resolved_index_dir, settings.model_copy(update={"embedder": manifest["embedder"]}))
        hits = index.search(text, k)[0]
    except (ReportIndexError, EmbedderUnavailable) as exc:
        _fail(str(exc))
    table = Table(title=f"{len(hits)} nearest prior reports ({index.embedder_name}, {index.index_type})")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id")
    table.add_column("labels")
    table.add_column("report")
    for i, h in enumerate(hits, 1):
        labels = ", ".join(h.labels) + (f" (?{', '.join(h.uncertain)})" if h.uncertain else "")
        table.add_row(str(i), f"{h.score:.3f}", h.id, labels or "-", h.snippet)
    Console(width=160).print(table)


@app.command("info")
def info(
    index_dir: Annotated[Path | None, typer.Option("--index-dir", help="Index location (default: CXR_AGENT_INDEX_DIR or <data dir>/index).")] = None,
) -> None:
    """Print the index manifest: embedder, corpus, labeler version, index type, size."""
    from rich.console import Console
    from rich.table import Table

    from tools.retrieval.index import ReportIndex, ReportIndexError

    settings = _settings(index_dir=index_dir)
    path = settings.resolved_index_dir
    try:
        m = ReportIndex.read_manifest(path)
    except ReportIndexError as exc:
        _fail(str(exc))
    table = Table(title=f"report index at {path}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    idx = m["index"]
    params = ", ".join(f"{k}={v}" for k, v in idx.items() if k != "type" and v is not None)
    rows = [
        ("reports", str(m["count"])),
        ("embedder", f"{m['embedder']} ({m['dimension']}-d)"),
        ("index", f"{idx['type']} ({params})"),
        ("corpus", f"{m['corpus']['spec']} ({m['corpus']['count']} reports)"),
        ("fingerprint", m["corpus"]["fingerprint"][:16]),
        ("additions", str(len(m.get("additions", [])))),
        ("labeler", m["labeler_version"]),
        ("created", m.get("created_at", "?")),
        ("updated", m.get("updated_at", "?")),
        ("top labels", ", ".join(f"{k} {v}" for k, v in sorted(m.get("label_counts", {}).items(), key=lambda kv: -kv[1])[:8])),
    ]
    for key, value in rows:
        table.add_row(key, value)
    Console(width=160).print(table)
