"""`cxr-agent setup`: build once, before anyone chats, what a first turn would otherwise build.

The demo (tiny) models are built and saved under the data dir, and the prior-report index is
built from the configured corpus, each under a rich progress bar. Run by `make run` before the app
starts; it is idempotent (a second run finds everything on disk and only checks it). Real weights
are never downloaded here (that is `cxr-agent models download`); setup says which are missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from cxr_agent.settings import Settings


def resolve_profile(settings: Settings, profile: str) -> str:
    """The profile `cxr-agent ui` would start with: real | tiny as given, auto = the environment's
    CXR_AGENT_MODEL_PROFILE, else real when every real model is present, else tiny (the demo)."""
    if profile == "auto":
        from tools.catalogue import real_models_present

        try:
            present = real_models_present(settings)
        except Exception:  # noqa: BLE001 - a status check must never stop the app from starting: the demo
            present = False
        profile = os.environ.get("CXR_AGENT_MODEL_PROFILE") or ("real" if present else "tiny")
    if profile not in {"real", "tiny"}:
        raise typer.BadParameter(f"profile must be real, tiny or auto, not {profile!r}")
    return profile


def setup_steps(settings: Settings) -> list[tuple[str, Callable[[Callable[[str, int, int | None], None]], Any]]]:
    """(label, run(progress)) per step: each demo model these settings use, then the report index."""
    from tools.catalogue import listed_entries

    steps: list[tuple[str, Callable]] = []
    for item in listed_entries(settings):
        if item.build is not None:
            steps.append((item.title, lambda _p, item=item: item.build(settings)))
    steps.append(("prior-report index", lambda progress: _index(settings, progress)))
    return steps


def _index(settings: Settings, progress: Callable[[str, int, int | None], None]) -> Any:
    """Open the index, building it from settings.corpus when there is none (the retrieval tool's own
    first-use path, so the app later opens exactly this index)."""
    from tools.retrieval.tool import RetrievalTool

    return RetrievalTool(settings).get_index(progress)


def setup(
    profile: str = typer.Option("auto", help="real | tiny | auto (as `cxr-agent ui`: real when its weights are present)."),
) -> None:
    """Build the demo models and the prior-report index once, with progress bars (idempotent)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from cxr_agent.settings import get_settings
    from tools.catalogue import weight_statuses

    settings = get_settings()
    settings = settings.model_copy(update={"model_profile": resolve_profile(settings, profile)})
    quiet_hub_bars()
    console = Console(stderr=True)
    console.print(f"cxr-agent setup (profile: {settings.model_profile}, data dir: {settings.data_dir})")
    failures: list[str] = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        for label, run in setup_steps(settings):
            task = bar.add_task(label, total=None)

            def progress(stage: str, done: int, total: int | None, task=task, label=label) -> None:
                bar.update(task, description=f"{label}: {stage}", completed=done, total=total)

            t0 = time.perf_counter()
            try:
                run(progress)
            except Exception as exc:  # report every step, fail at the end
                failures.append(f"{label}: {type(exc).__name__}: {exc}")
                bar.update(task, description=f"[red]{label}: failed[/red]")
                continue
            bar.update(task, description=f"{label}: done in {time.perf_counter() - t0:.1f} s", completed=1, total=1)
    for s in weight_statuses(settings):
        if not s.present and settings.model_profile == "real":
            failures.append(f"{s.name} is missing ({s.detail}); fix: {s.fix}")
        elif not s.present:
            console.print(f"[dim]note: {s.name} not present: the demo does not need it "
                          "(`cxr-agent models list` says how to get it)[/dim]")
    from cli.models import ROUTER_MODEL_FIX, router_model_status

    built, where, detail = router_model_status(settings)
    console.print(f"[dim]router: the fine-tuned model at {where} ({detail})[/dim]" if built else
                  f"[dim]note: no fine-tuned router model ({ROUTER_MODEL_FIX})[/dim]")
    for msg in failures:
        console.print(f"[red]error:[/red] {msg}")
    if not failures:
        console.print("[green]setup complete[/green]: the first chat turn will not build anything.")
    raise typer.Exit(1 if failures else 0)


def quiet_hub_bars() -> None:
    """transformers/hub print their own tqdm bars while the demo VLM is saved; ours is the one shown."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # transformers absent: nothing to silence
        pass
