"""`cxr-agent forget THREAD_ID` (one conversation) and `cxr-agent forget --expired` (the retention, now).

Deletes the conversation's checkpoints, the studies and heatmaps only it referenced and its audit
lines, then compacts the SQLite checkpoint file so the deleted content is gone from disk, and says
when that could not finish (agents/memory/retention.py).
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
        _report_compaction(out.compacted)
        return
    out = forget_thread(thread_id, saver=saver, store=store, artifacts_dir=settings.artifacts_dir, settings=settings)
    if out is None:
        typer.secho(f"No conversation {thread_id!r} in {_where(settings)}.", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    kept = ""
    if out.kept_recent:
        kept = " (its study was uploaded again since, for another conversation, and is kept)"
    elif not out.studies:
        kept = " (its study is still used by another conversation)"
    typer.echo(f"Deleted conversation {thread_id}: {len(out.studies)} study(ies), "
               f"{out.artifact_dirs} heatmap folder(s) and {out.audit_lines} audit line(s) removed{kept}.")
    _report_compaction(out.compacted)


def _report_compaction(compacted: bool | None) -> None:
    """Say when the SQLite file could not be compacted: the deleted text may still be in its free pages."""
    if compacted is False:
        typer.secho("The checkpoint database could not be compacted now (another process is reading it): the "
                    "deleted text may remain in the file until the next `cxr-agent forget --expired` or retention "
                    "pass. Close other cxr-agent processes and run `cxr-agent forget --expired`.",
                    fg=typer.colors.YELLOW, err=True)


def _where(settings) -> str:
    url = settings.resolved_checkpointer_url
    return url.split("@")[-1] if url.startswith("postgres") else url
