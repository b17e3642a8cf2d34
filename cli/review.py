"""`cxr-agent review ...`: a clinician's sign-off of a conversation's study from the command line.

show / edit (accept, reject, change, add, notes, report text; kept as a draft; for a study compared with a
prior, its change rows too: --accept-change, --reject-change, --set-change) / sign / log (the audit
trail) / files (the AI's SR, the signed SR and the FHIR bundle) / push (STOW-RS, PACS studies only) /
export (JSONL for `cxr-agent eval agreement`). Signing is verified only under an identity: CXR_AGENT_REVIEW_TOKEN holds
the reader's token of the graph server's users file (CXR_AGENT_SERVER_USERS); ``--name`` alone signs
unverified ("reviewed by (unauthenticated) NAME").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True)
THREAD = typer.Argument(..., help="The conversation id (shown by `ask`, `pacs pull` and in the UI).")
NAME = typer.Option(None, "--name", help="Your name when you have no token (the review stays unverified).")
TOKEN_ENV = "CXR_AGENT_REVIEW_TOKEN"


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def _reviewer(settings: Any, name: str | None) -> Any:
    """The reader: from the token in CXR_AGENT_REVIEW_TOKEN (a login), else the typed name."""
    from agents.review import Reviewer

    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        from server.identities import IdentityFileError, hash_token, load_users

        if settings.server_users is None:
            raise _fail(f"{TOKEN_ENV} is set but CXR_AGENT_SERVER_USERS names no users file to check it against")
        try:
            identity = load_users(Path(settings.server_users)).get(hash_token(token))
        except IdentityFileError as exc:
            raise _fail(str(exc)) from None
        if identity is None:
            raise _fail(f"the token in {TOKEN_ENV} belongs to no user of the users file")
        return Reviewer.from_identity(identity)
    if not name:
        raise _fail(f"say who reviews: set {TOKEN_ENV} (verified) or give --name (unverified)")
    return Reviewer.typed(name)


def _open(thread_id: str, name: str | None, study: str | None = None) -> tuple[Any, Any]:
    from agents.review import ReviewError, open_review
    from cxr_agent.settings import get_settings
    from graph import build_graph

    settings = get_settings()
    try:
        return open_review(build_graph(settings), thread_id, study, reviewer=_reviewer(settings, name),
                           settings=settings), settings
    except ReviewError as exc:
        raise _fail(str(exc)) from None


def _table(review: Any) -> Any:
    from rich.table import Table

    from knowledge.vocabulary import display_name

    t = Table(title=f"Review v{review.version} of study {review.study_id[:12]}")
    for col in ("finding", "AI", "confidence", "flagged", "action", "signed", "note"):
        t.add_column(col)
    for it in review.items:
        t.add_row(display_name(it.finding), it.ai_status.value if it.ai_status else "-",
                  f"{it.ai_confidence:.2f}" if it.ai_confidence is not None else "-", "yes" if it.flagged else "",
                  it.action or ("NEEDED" if it.flagged else ""), it.final_status.value, it.note)
    return t


def _change_table(review: Any) -> Any:
    from rich.table import Table

    from knowledge.vocabulary import display_name

    t = Table(title=f"Change since prior study {(review.prior_study_id or '')[:12]}")
    for col in ("finding", "before", "now", "AI change", "sources", "flagged", "action", "signed", "note"):
        t.add_column(col)
    for row in review.changes:
        sources = ", ".join([*row.agreeing, *(f"not {s}" for s in row.disagreeing)])
        t.add_row(display_name(row.finding), row.before.value if row.before else "-", row.now.value if row.now else "-",
                  row.ai_change.replace("_", " "), sources or "-", "yes" if row.flagged else "",
                  row.action or ("NEEDED" if row.flagged else ""),
                  (row.final_change or "no change").replace("_", " "), row.note)
    return t


def _left(review: Any) -> str:
    left = [*review.pending(), *(f"{f} (change)" for f in review.pending_changes())]
    return ", ".join(left)


@app.command("show")
def show(thread: str = THREAD, name: str = NAME) -> None:
    """The study's findings: the AI's call, whether flagged, and your action so far."""
    from rich.console import Console

    review, _ = _open(thread, name or "viewer")
    Console(width=160).print(_table(review))
    if review.changes:
        Console(width=160).print(_change_table(review))
    if _left(review):
        typer.echo(f"needs an action before signing: {_left(review)}")


def _pairs(values: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        finding, sep, rest = v.partition("=")
        if not sep or not finding.strip():
            raise _fail(f"{what} takes FINDING=VALUE (got {v!r})")
        out.append((finding.strip(), rest.strip()))
    return out


@app.command("edit")
def edit(
    thread: str = THREAD,
    accept: Annotated[list[str], typer.Option("--accept", help="Accept the AI's call on a finding.")] = [],  # noqa: B006
    reject: Annotated[list[str], typer.Option("--reject", help="Reject it: present<->absent.")] = [],  # noqa: B006
    change: Annotated[list[str], typer.Option("--change", help="FINDING=present|absent|uncertain.")] = [],  # noqa: B006
    add: Annotated[list[str], typer.Option("--add", help="A finding the tools missed (FINDING[=status]).")] = [],  # noqa: B006
    note: Annotated[list[str], typer.Option("--note", help="FINDING=text, kept with that finding's action.")] = [],  # noqa: B006
    accept_change: Annotated[list[str], typer.Option("--accept-change", help="Accept the change since the prior.")
                             ] = [],  # noqa: B006
    reject_change: Annotated[list[str], typer.Option("--reject-change", help="Reject it: no change is signed.")
                             ] = [],  # noqa: B006
    set_change: Annotated[list[str], typer.Option(
        "--set-change", help="FINDING=new|worse|stable|improved|resolved|cannot_compare.")] = [],  # noqa: B006
    change_note: Annotated[list[str], typer.Option("--change-note", help="FINDING=text, kept with its change.")
                           ] = [],  # noqa: B006
    report_file: Annotated[Path | None, typer.Option("--report-file", help="Replace the report text with this file.")
                           ] = None,
    name: str = NAME,
) -> None:
    """Act on findings and edit the report; the review is kept as a draft until `sign`."""
    from agents.review import ReviewError, ReviewStore

    review, settings = _open(thread, name)
    notes = dict(_pairs(note, "--note"))
    try:
        for f in accept:
            review.accept(f, notes.get(f, ""))
        for f in reject:
            review.reject(f, notes.get(f, ""))
        for f, status in _pairs(change, "--change"):
            review.change(f, status, notes.get(f, ""))
        for v in add:
            f, _, status = v.partition("=")
            review.add(f.strip(), status.strip() or "present", notes.get(f.strip(), ""))
        if report_file is not None:
            review.edit_report(report_file.read_text(encoding="utf-8"))
        change_notes = dict(_pairs(change_note, "--change-note"))
        for f in accept_change:
            review.accept_change(f, change_notes.get(f, ""))
        for f in reject_change:
            review.reject_change(f, change_notes.get(f, ""))
        for f, value in _pairs(set_change, "--set-change"):
            review.set_change(f, value, change_notes.get(f, ""))
    except (ReviewError, OSError) as exc:
        raise _fail(str(exc)) from None
    ReviewStore.for_settings(settings).save_draft(review)
    show_pending = _left(review)
    typer.echo("draft saved" + (f"; still needs an action: {show_pending}" if show_pending else "; ready to sign"))


@app.command("sign")
def sign(thread: str = THREAD, name: str = NAME) -> None:
    """Sign the draft: frozen from now on (a later edit opens a new version that supersedes it)."""
    from agents.review import ReviewError, ReviewStore

    review, settings = _open(thread, name)
    try:
        signed = review.sign()
        ReviewStore.for_settings(settings).save_signed(signed)
    except ReviewError as exc:
        raise _fail(str(exc)) from None
    state = "verified" if signed.verified else "NOT verified (no login)"
    typer.echo(f"signed version {signed.version} by {signed.reviewer.label}: {state}; review id {signed.review_id}")


def _current(thread: str, study: str | None = None) -> tuple[Any, Any]:
    from agents.review import ReviewStore
    from agents.review.thread import thread_study
    from cxr_agent.settings import get_settings
    from graph import build_graph

    settings = get_settings()
    sid = study or thread_study(build_graph(settings).get_state({"configurable": {"thread_id": thread}}).values or {})
    signed = ReviewStore.for_settings(settings).current(thread, sid) if sid else None
    if signed is None:
        raise _fail(f"conversation {thread!r} has no signed review: run `cxr-agent review sign {thread}` first")
    return signed, settings


@app.command("files")
def files(thread: str = THREAD, out: Annotated[Path, typer.Option("--out", help="Folder for the files.")] = Path(".")
          ) -> None:
    """Write the AI's SR, the signed SR and the FHIR bundle of the latest signed version (with the changes since
    the prior, which both SRs reference, when the study was compared with one)."""
    from agents.review.outputs import fhir_bundle, sr_pair
    from tools.ingestion.store import StudyStore
    from tools.interop.fhir import fhir_json
    from tools.interop.sr import deidentified_source

    signed, settings = _current(thread)
    store = StudyStore.from_settings(settings)
    study = store.get(signed.study_id)
    prior = deidentified_source(store.get(signed.prior_study_id)) if signed.changes and signed.prior_study_id else None
    ai, ver = sr_pair(signed, deidentified_source(study), demo=settings.is_demo, prior=prior)
    out.mkdir(parents=True, exist_ok=True)
    ai.save_as(out / "ai-draft-sr.dcm", enforce_file_format=True)
    ver.save_as(out / "signed-sr.dcm", enforce_file_format=True)
    (out / "signed-fhir.json").write_text(fhir_json(fhir_bundle(signed, demo=settings.is_demo)))
    typer.echo(f"wrote ai-draft-sr.dcm, signed-sr.dcm ({ver.VerificationFlag}) and signed-fhir.json to {out}")


@app.command("push")
def push(thread: str = THREAD,
         study: str = typer.Option(..., "--study", "-s", help="The PACS Study Instance UID the image came from.")) -> None:
    """STOW-RS the AI's SR and the verified SR into the PACS study (a verified review of a pulled study only)."""
    from agents.review import ReviewStore
    from agents.review.outputs import push_verified
    from tools.ingestion.study import StudyError
    from tools.interop.dicomweb import PacsClient, PacsError
    from tools.interop.signed import NotVerifiable

    signed, settings = _current(thread)
    earlier = ReviewStore.for_settings(settings).pushed_srs(thread, signed.study_id)  # by `cxr-agent pacs push`
    try:
        pushed = push_verified(signed, PacsClient(settings), study, demo=settings.is_demo, earlier_ai_srs=earlier)
    except (PacsError, StudyError, NotVerifiable) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"stored the verified SR (SOP Instance UID {pushed.verified_sop_uid}) beside the AI's SR")


@app.command("log")
def log(thread: str = THREAD) -> None:
    """The audit trail of every signed version: who, when, which finding, from what to what."""
    from rich.console import Console
    from rich.table import Table

    from agents.review import ReviewError, ReviewStore
    from cxr_agent.settings import get_settings

    try:
        versions = ReviewStore.for_settings(get_settings()).signed(thread)
    except ReviewError as exc:
        raise _fail(str(exc)) from None
    if not versions:
        raise _fail(f"conversation {thread!r} has no signed review")
    table = Table(title=f"Audit trail of conversation {thread}")
    for col in ("version", "when", "who", "what", "finding", "from", "to"):
        table.add_column(col)
    for v in versions:
        for c in v.events:
            table.add_row(str(v.version), c.at, c.by, c.what, c.finding or "", c.before or "", c.after or "")
    Console(width=200).print(table)


@app.command("export")
def export(out: Annotated[Path, typer.Option("--out", help="JSONL file to write.")] = Path("reviews.jsonl"),
           include_unverified: Annotated[bool, typer.Option("--include-unverified",
                                                            help="Also reviews signed without a login.")] = False,
           ) -> None:
    """Signed reviews as JSONL (AI vs signed status per finding, sources, scores; no text, no identifiers)."""
    from agents.review import ReviewError, ReviewStore
    from agents.review.export import write_jsonl
    from cxr_agent.settings import get_settings

    try:
        n = write_jsonl(ReviewStore.for_settings(get_settings()).all_signed(), out,
                        include_unverified=include_unverified)
    except ReviewError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"wrote {n} finding row(s) to {out}")
