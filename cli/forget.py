"""`cxr-agent forget THREAD_ID` (one conversation) and `cxr-agent forget --expired` (the retention, now).

Deletes the conversation's checkpoints and the studies and heatmaps only it referenced, then
compacts the SQLite checkpoint file so the deleted content is gone from disk (agents/memory/retention.py).
Loads no model: it opens only the checkpointer and the study store.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach `forget` to the main app."""
    app.command("forget")(forget)


def forget(
    thread_id: str = typer.Argument(None, help="The conversation id (shown by `ask` and in the UI's sidebar)."),
    expired: bool = typer.Option(False, "--expired", help="Apply the retention now (CXR_AGENT_RETENTION_DAYS) instead."),
) -> None:
    """Delete a conversation and the studies/heatmaps only it used (or everything past the retention)."""
    from agents.memory.checkpointers import CheckpointerError, make_checkpointer
    from agents.memory.retention import apply_retention, forget_thread
    from cxr_agent.settings import get_settings
    from tools.ingestion.store import StudyStore

    if bool(thread_id) == expired:
        raise typer.BadParameter("give a THREAD_ID or --expired (not both)")
    settings = get_settings()
    try:
        saver = make_checkpointer(settings)
    except CheckpointerError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    store = StudyStore.from_settings(settings)
    if expired:
        if settings.retention_days <= 0:
            typer.echo("Retention is off (CXR_AGENT_RETENTION_DAYS=0): nothing deleted.")
            return
        out = apply_retention(settings, saver=saver, store=store)
        typer.echo(f"Older than {settings.retention_days:g} days: deleted {len(out.threads)} conversation(s), "
                   f"{len(out.studies)} study(ies), {out.artifact_dirs} heatmap folder(s), {out.audit_files} audit day(s).")
        return
    out = forget_thread(thread_id, saver=saver, store=store, artifacts_dir=settings.artifacts_dir)
    if out is None:
        typer.secho(f"No conversation {thread_id!r} in {_where(settings)}.", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    kept = "" if out.studies else " (its study is still used by another conversation)"
    typer.echo(f"Deleted conversation {thread_id}: {len(out.studies)} study(ies) and "
               f"{out.artifact_dirs} heatmap folder(s) removed{kept}.")


def _where(settings) -> str:
    url = settings.resolved_checkpointer_url
    return url.split("@")[-1] if url.startswith("postgres") else url
