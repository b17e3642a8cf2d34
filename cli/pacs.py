"""`cxr-agent pacs pull` and `cxr-agent pacs push`: a PACS study in, the SR back, only when asked.

pull: QIDO/WADO the study's first frontal CR/DX image (tools.interop.dicomweb), ingest it exactly like an
upload (tools.ingestion.loader.load_study: limits, refusals, de-identification), run one turn, print the reply.
With --with-prior the same patient's latest earlier CR/DX study comes too: it is read first, and the order,
interval and patient keys from both headers go into the conversation only (agents.comparing.pair).
Nothing of the PACS reference is stored: push finds the same image again by its pixel hash.
push: rebuild the SR from the thread's latest reconciled findings against the source header fetched
again from the PACS, and STOW-RS it into the same study. Optional FHIR JSON / SR files on request.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)

STUDY_OPT = typer.Option(..., "--study", "-s", help="Study Instance UID on the PACS (CXR_AGENT_PACS_URL).")
FHIR_OPT = typer.Option(None, "--fhir", help="Also write the findings as FHIR R4B JSON to this file.")
DEFAULT_QUESTION = "Write a report"
COMPARE_QUESTION = "Compared with the prior, what has changed?"  # the default with --with-prior
PRIOR_READ = "Write a report"  # the prior is read in full, so that every finding's change can be decided


def _fail(message: str) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[red]{message}[/red]")
    return typer.Exit(2)


def _patient_key(salt: bytes):
    """A patient-key function under the conversation's salt: the keys compare with every other key made in
    that thread, and with no other thread's."""
    import functools

    from agents.comparing.patient import patient_key

    return functools.partial(patient_key, salt=salt)


def _findings_table(decisions):
    from rich.table import Table

    table = Table(title="Reconciled findings")
    for col in ("finding", "status", "confidence", "agree", "disagree", "review"):
        table.add_column(col)
    for d in decisions:
        table.add_row(d.finding, d.status.value, f"{d.confidence:.2f}", ", ".join(d.agreeing) or "-",
                      ", ".join(d.disagreeing) or "-", "yes" if d.needs_review else "")
    return table


@app.command("pull")
def pull(
    study: str = STUDY_OPT,
    question: str = typer.Argument(DEFAULT_QUESTION, help="What to ask about the image (with --with-prior: "
                                   f"default '{COMPARE_QUESTION}')."),
    thread: str = typer.Option(None, "--thread", "-t", help="Conversation id (default: new)."),
    fhir: Path = FHIR_OPT,
    with_prior: bool = typer.Option(False, "--with-prior", help="Also pull the same patient's latest earlier "
                                    "CR/DX study, read it first and compare (order and interval from the headers)."),
) -> None:
    """Pull a study's chest radiograph from the PACS and ask about it (nothing is sent back)."""
    from rich.console import Console
    from rich.markdown import Markdown

    from cxr_agent.settings import get_settings
    from tools.ingestion.study import StudyError
    from tools.interop.dicomweb import PacsClient, PacsError

    settings = get_settings()
    out, err = Console(), Console(stderr=True)
    prior = pairing = graph = None
    thread_id = thread or uuid.uuid4().hex[:12]
    config = {"configurable": {"thread_id": thread_id}}
    salt_input: dict[str, str] = {}
    try:
        if with_prior:
            from agents.comparing.patient import thread_salt
            from graph import build_graph

            graph = build_graph(settings)  # first: the keys are made under the conversation's salt
            salt, salt_input = thread_salt(graph.get_state(config).values)
            pair = PacsClient(settings).pull_with_prior(study, key=_patient_key(salt))
            pulled, prior = pair.current, pair.prior
        else:
            pulled = PacsClient(settings).pull(study)
    except (PacsError, StudyError) as exc:
        raise _fail(str(exc)) from None
    from graph import build_graph, runtime

    graph = graph or build_graph(settings)
    # the graph's own store and cache, held for this conversation as an upload is (a forget of another
    # conversation on the same image keeps it while the prior is read first)
    study_id = runtime(graph).studies.put(pulled.study, thread_id=thread_id)
    err.print(f"[dim]pulled a {pulled.source.modality} {pulled.source.view or ''} image "
              f"({pulled.study.width} x {pulled.study.height}); de-identified as study {study_id[:12]}[/dim]")
    inputs: dict = {"messages": [("user", question)], "study_id": study_id}
    if with_prior and prior is None:
        err.print("[yellow]The PACS holds no earlier CR/DX study of this patient: the study is read alone.[/yellow]")
    elif prior is not None:
        from agents.comparing.pair import ordered_pair

        prior_id = runtime(graph).studies.put(prior.study, thread_id=thread_id)
        pairing = ordered_pair((prior_id, pair.taken[0], pair.keys[0]), (study_id, pair.taken[1], pair.keys[1]),
                               thread_keys=True)
        if pairing is None or pairing.study_id != study_id:
            raise _fail("The two studies' headers do not give an order (same or missing date): nothing was compared.")
        days = pairing.interval_days
        err.print(f"[dim]pulled the prior ({days} day{'s' if days != 1 else ''} earlier); de-identified as study "
                  f"{prior_id[:12]}; reading it first…[/dim]")
        graph.invoke({"messages": [("user", PRIOR_READ)], "study_id": prior_id}, config)
        inputs["pairs"] = {study_id: pairing.model_dump()}
        inputs.update(salt_input)
        if question == DEFAULT_QUESTION:
            inputs["messages"] = [("user", COMPARE_QUESTION)]
    graph.invoke(inputs, config)
    state = graph.get_state(config).values
    out.print(Markdown(state["messages"][-1].content))
    decisions = list(state.get("decisions") or [])
    if decisions:
        out.print(_findings_table(decisions))
    if fhir is not None:
        from agents.turn.comparison import thread_changes
        from tools.interop.fhir import build_fhir_bundle, fhir_json

        compared = thread_changes(state["messages"], study_id)  # a comparison with the pulled prior: its changes
        bundle = build_fhir_bundle(decisions=decisions, evidence=state.get("evidence") or [],
                                   report_text=state["messages"][-1].content, demo=settings.is_demo,
                                   study_uid=study, changes=compared.changes if compared is not None else (),
                                   prior_study_uid=prior.source.study_uid if compared and prior is not None else None)
        fhir.write_text(fhir_json(bundle))
        err.print(f"[dim]FHIR R4B bundle written to {fhir}[/dim]")
    err.print(f"[dim]thread: {thread_id}  (send the SR back with: cxr-agent pacs push --study <UID> "
              f"--thread {thread_id})[/dim]")


@app.command("push")
def push(
    study: str = STUDY_OPT,
    thread: str = typer.Option(..., "--thread", "-t", help="The conversation whose findings to send."),
) -> None:
    """Send the thread's latest findings to the PACS as a DICOM SR (STOW-RS) in the same study."""
    from rich.console import Console

    from agents.memory.ledger import as_ledger, from_legacy, study_decisions
    from cxr_agent.settings import get_settings
    from graph import build_graph
    from tools.ingestion.study import StudyError
    from tools.interop.dicomweb import PacsClient, PacsError

    settings = get_settings()
    state = build_graph(settings).get_state({"configurable": {"thread_id": thread}}).values
    ledger = as_ledger(state.get("ledger")) or from_legacy(state.get("last_result"))
    study_id = ledger.study_id if ledger is not None else state.get("study_id")
    decisions = study_decisions(state, study_id)
    if not decisions or not study_id:
        raise _fail(f"Conversation {thread!r} has no findings on an image yet: run `cxr-agent pacs pull` first.")
    replies = [m for m in state.get("messages") or [] if getattr(m, "type", "") == "ai"]
    from agents.turn.comparison import thread_changes

    compared = thread_changes(state.get("messages") or [], study_id)
    try:
        client = PacsClient(settings)
        ref = client.locate(study, study_id)
        prior_ref = client.compared_prior(study, compared.prior_study_id) if compared is not None else None
        if compared is not None and prior_ref is None:
            Console(stderr=True).print("[yellow]The study the conversation compared with is not this study's prior "
                                       "on the PACS: the SR carries no change since it.[/yellow]")
        pushed = client.push_report(ref, decisions=decisions, evidence=ledger.evidence() if ledger is not None else [],
                                    report_text=replies[-1].content if replies else "", demo=settings.is_demo,
                                    prior=prior_ref, changes=compared.changes if compared is not None else ())
    except (PacsError, StudyError) as exc:
        raise _fail(str(exc)) from None
    from agents.review import ReviewStore
    from tools.interop.signed import SRRef

    # a verified SR signed later on this conversation references this one (pertinent other evidence)
    ReviewStore.for_settings(settings).record_pushed_sr(thread, study_id, SRRef.of(pushed))
    Console().print(f"Stored a DICOM SR with {pushed.findings} finding(s) in the study on the PACS "
                    f"(SR SOP Instance UID {pushed.sop_uid}). It is marked UNVERIFIED: a clinician must review it.")
