"""`cxr-agent models ...`: which model weights are usable here, and fetching them.

Heavy imports (torch, xrv, transformers) stay inside functions so `cxr-agent --help` is fast,
and every status check is tolerant: a broken or absent VLM module shows as "unavailable", it
never stops the listing (or `cxr-agent ui --profile auto`, which calls weight_statuses()).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tools.catalogue import (  # noqa: F401 - re-exported for the commands below
    BUNDLED_EMBEDDER,
    classifier_status,
    embedder_status,
    vlm_status,
    weight_statuses,
)

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

app = typer.Typer(no_args_is_help=True)

@app.command("list")
def list_models() -> None:
    """Show each configured model: whether its weights are here, where, and how to fix it."""
    from rich.console import Console
    from rich.table import Table

    from cxr_agent.settings import get_settings

    settings = get_settings()
    table = Table(title=f"cxr-agent models (profile: {settings.model_profile})")
    for col in ("model", "kind", "present", "location", "fix"):
        table.add_column(col, overflow="fold")
    for s in weight_statuses(settings):
        present = "[green]yes[/green]" if s.present else "[red]no[/red]"
        loc = s.location or "-"
        if s.detail:
            loc = f"{loc}\n[dim]{s.detail}[/dim]"
        table.add_row(s.name, s.kind, present, loc, s.fix or "-")
    Console(width=160).print(table)


@app.command("download")
def download(
    what: str = typer.Option("all", help="all | classifier | vlm"),
    all_classifiers: bool = typer.Option(False, "--all-classifiers",
                                         help="Fetch every torchxrayvision model, not only the configured one."),
) -> None:
    """Fetch the configured models' weights (needs internet; offline mode refuses)."""
    from rich.console import Console

    from cxr_agent.settings import get_settings

    if what not in {"all", "classifier", "vlm"}:
        raise typer.BadParameter("--what must be all, classifier or vlm")
    settings = get_settings()
    console = Console(stderr=True)
    failures: list[str] = []
    if what in {"all", "classifier"}:
        from tools.classifier_weights import MODEL_NAMES

        names = list(MODEL_NAMES) if all_classifiers else [settings.classifier_model]
        for name in names:
            err = _download_classifier(settings, name, console)
            if err:
                failures.append(err)
    if what in {"all", "vlm"}:
        try:
            from tools.vlm.weights import download_vlm_weights
        except Exception as exc:
            failures.append(f"VLM download unavailable: {type(exc).__name__}: {exc}")
        else:
            try:
                with console.status(f"Downloading {settings.vlm_model_id} ..."):
                    path = download_vlm_weights(settings)
                console.print(f"[green]VLM weights ready:[/green] {path}")
            except Exception as exc:
                failures.append(f"VLM {settings.vlm_model_id}: {exc}")
    for msg in failures:
        console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(1 if failures else 0)


def _download_classifier(settings: Settings, name: str, console) -> str | None:
    """One xrv weight file with a rich progress bar; returns an error message or None."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from tools.classifier_weights import download_classifier_weights

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console) as bar:
        task = bar.add_task(f"classifier {name}", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        try:
            path = download_classifier_weights(settings, progress, name=name)
        except Exception as exc:
            return f"classifier {name}: {exc}"
    console.print(f"[green]classifier weights ready:[/green] {path}")
    return None
