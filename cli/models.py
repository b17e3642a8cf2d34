"""`cxr-agent models ...`: which model weights are usable here, and fetching them.

Reads only the model catalogue (tools/catalogue.py). Heavy imports (torch, xrv, transformers) stay
inside functions so `cxr-agent --help` is fast, and every status check is tolerant: a broken or
absent module shows as "unavailable", it never stops the listing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tools.catalogue import (  # noqa: F401 - re-exported for callers of the old names
    BUNDLED_EMBEDDER,
    classifier_status,
    embedder_status,
    entry,
    vlm_status,
    weight_statuses,
)

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

app = typer.Typer(no_args_is_help=True)

def router_model_status(settings: Settings) -> tuple[bool, str, str]:
    """(built and current, where, what it is or why not) for the optional fine-tuned router model.
    Reads its metadata only; the model itself loads when the router first needs it."""
    from agents.routing import router_model
    from agents.routing.semantic import EXAMPLES_PATH

    where = router_model.model_dir(settings.data_dir)
    try:
        meta = router_model.check(where, EXAMPLES_PATH)
    except router_model.RouterModelError as exc:
        return False, str(where), str(exc)
    return True, str(where), f"SetFit on {meta.get('n_examples', '?')} examples (sha256 {str(meta.get('examples_sha256'))[:12]})"


ROUTER_MODEL_FIX = "optional: cxr-agent router train (make router-model); without it the logistic regression routes"


def _downloadable() -> tuple[str, ...]:
    from tools import catalogue

    return tuple(e.key for e in catalogue.CATALOGUE if e.download is not None)


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
    built, where, detail = router_model_status(settings)
    table.add_row("router model (fine-tuned MiniLM)", "router", "[green]yes[/green]" if built else "no",
                  f"{where}\n[dim]{detail}[/dim]", "-" if built else ROUTER_MODEL_FIX)
    Console(width=160).print(table)


@app.command("download")
def download(
    what: str = typer.Option("all", help=f"all | {' | '.join(_downloadable())}"),
    all_classifiers: bool = typer.Option(False, "--all-classifiers",
                                         help="Fetch every torchxrayvision model, not only the configured one."),
    trust_existing: bool = typer.Option(
        False, "--trust-existing",
        help="A classifier file already on disk with no recorded sha256: record its hash (trust on first use). "
             "Only for a file you know came from the torchxrayvision release."),
) -> None:
    """Fetch the configured real models' weights (the selected VLM families' only, unless --what names one) (needs internet; offline mode refuses), checking each
    file's sha256 (or recording it, where the publisher gives none)."""
    from rich.console import Console

    from cxr_agent.settings import get_settings

    downloadable = _downloadable()
    if what != "all" and what not in downloadable:
        raise typer.BadParameter(f"--what must be all or one of: {', '.join(downloadable)}")
    settings = get_settings()
    console = Console(stderr=True)
    failures: list[str] = []
    from tools.catalogue import listed_entries

    # all = the real models these settings use (a VLM family only when selected); --what any one of them
    keys = tuple(e.key for e in listed_entries(settings) if e.download is not None) if what == "all" else (what,)
    for key in keys:
        if key == "classifier":
            from tools.classifier.files import MODEL_NAMES

            names = list(MODEL_NAMES) if all_classifiers else [settings.classifier_model]
            failures += [err for name in names if (err := _download_classifier(settings, name, console, trust_existing))]
        else:
            err = _download_other(settings, key, console)
            if err:
                failures.append(err)
    for msg in failures:
        console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(1 if failures else 0)


def _download_other(settings: Settings, key: str, console) -> str | None:
    """A catalogue entry fetched under a spinner that shows its status lines; an error message or None."""
    item = entry(key)
    try:
        with console.status(f"Downloading {item.title} ...") as spinner:
            path = item.download(settings, lambda line: spinner.update(str(line)))  # type: ignore[misc]
    except Exception as exc:
        from tools.catalogue import model_name

        return f"{item.title} {model_name(item, settings)}: {exc}"
    console.print(f"[green]{item.title} ready:[/green] {path}")
    return None


def _download_classifier(settings: Settings, name: str, console, trust_existing: bool = False) -> str | None:
    """One xrv weight file with a rich progress bar; returns an error message or None."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console) as bar:
        task = bar.add_task(f"classifier {name}", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        try:
            path = entry("classifier").download(settings, progress, name=name, trust_existing=trust_existing)  # type: ignore[misc]
        except Exception as exc:
            return f"classifier {name}: {exc}"
    console.print(f"[green]classifier weights ready (sha256 checked):[/green] {path}")
    return None
