"""`cxr-agent ui` and `cxr-agent ask`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import typer

UI_APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"


def register(app: typer.Typer) -> None:
    """Attach the top-level run commands to the main app."""
    app.command("ui")(ui)
    app.command("ask")(ask)


def ui(
    host: str = typer.Option(None, help="Bind address (default from CXR_AGENT_UI_HOST: 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default from CXR_AGENT_UI_PORT: 8501)."),
    profile: str = typer.Option(
        "auto", help="real | tiny | auto: auto uses real weights when present, else demo (tiny) mode."
    ),
) -> None:
    """Start the Streamlit chat app."""
    from cli.setup import resolve_profile
    from cxr_agent.settings import get_settings

    settings = get_settings()
    env = dict(os.environ)
    profile = resolve_profile(settings, profile)  # the one auto rule, shared with `cxr-agent setup`
    env["CXR_AGENT_MODEL_PROFILE"] = profile
    if profile == "tiny":
        typer.secho(
            "Starting in DEMO mode: random-weight models, no diagnostic value. "
            "Run `cxr-agent models download` for the real models.",
            fg=typer.colors.YELLOW,
            err=True,
        )
    address = host or settings.ui_host
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(UI_APP),
        "--server.address", address,
        "--server.port", str(port or settings.ui_port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        *streamlit_safety_flags(settings, address),
    ]
    if not _loopback(address) and not settings.ui_require_login:
        typer.secho(
            f"WARNING: binding to {address} without a login: anyone who can reach this port can upload studies "
            "and read every answer. Set CXR_AGENT_UI_REQUIRE_LOGIN=true (Streamlit OIDC, [auth] in "
            ".streamlit/secrets.toml) or stay on 127.0.0.1 behind an authenticating proxy.",
            fg=typer.colors.RED, err=True,
        )
        if not settings.ui_allowed_hosts.strip():
            typer.secho("Set CXR_AGENT_UI_ALLOWED_HOSTS to the host names users type (server.allowedHosts).",
                        fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(run_forwarding_signals(cmd, env))


FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_forwarding_signals(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd`` as a child that lives and dies with this command: SIGTERM, SIGINT and SIGHUP sent
    to this process go to the child (Streamlit then shuts down cleanly) and the command exits with the
    child's status. Without this a stopped `cxr-agent ui` left Streamlit answering on its port."""
    child = subprocess.Popen(cmd, env=env)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # a Ctrl-C racing the handler install: already sent to the group
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:  # this command is failing for another reason: never leave Streamlit behind
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def streamlit_safety_flags(settings, address: str) -> list[str]:
    """Streamlit options the app relies on, whatever directory it is started from (the shipped
    .streamlit/config.toml only applies when started from the repository root)."""
    from tools.ingestion.loader import MAX_FILE_BYTES

    hosts = [h.strip() for h in settings.ui_allowed_hosts.split(",") if h.strip()]
    if not hosts and _loopback(address):
        hosts = ["localhost", "127.0.0.1", "[::1]"]
    flags = [
        "--server.maxUploadSize", str(max(1, MAX_FILE_BYTES // 2**20)),  # the limit ingestion enforces
        "--server.enableXsrfProtection", "true",
        "--server.enableCORS", "true",
        "--client.showErrorDetails", "none",
        "--client.toolbarMode", "minimal",  # no Deploy button or developer menu for clinicians
    ]
    for h in hosts:
        flags += ["--server.allowedHosts", h]
    return flags


def _loopback(address: str) -> bool:
    import ipaddress

    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _pair_from_headers(prior: Path, prior_id: str, current: Path, current_id: str, *, salt: bytes) -> Any:
    """The two files' StudyPair when both DICOM headers are dated (None otherwise); BadParameter when the
    headers say --prior was taken after IMAGE. Dates and patient ids are read here, then dropped; the patient
    keys are made under the conversation's ``salt``, so they compare with every other key of the thread."""
    from agents.comparing.pair import ordered_pair
    from agents.comparing.patient import patient_key
    from tools.ingestion.headers import header_facts

    read = []
    for path, study_id in ((prior, prior_id), (current, current_id)):
        facts = header_facts(path.read_bytes())
        read.append((study_id, facts.taken, patient_key(facts.patient_id, facts.issuer, salt=salt)))
    pair = ordered_pair(read[0], read[1], thread_keys=True)
    if pair is not None and pair.study_id != current_id:
        raise typer.BadParameter("the DICOM headers say the --prior film was taken after IMAGE: swap them",
                                 param_hint="--prior")
    return pair


DEFAULT_QUESTION = "Write a report"
COMPARE_QUESTION = "Compared with the prior, what has changed?"
PRIOR_READ = "Write a report"  # the prior is read in full, so that every finding's change can be decided


def ask(
    image: str = typer.Argument(..., help="PNG, JPEG or DICOM file; '-' to keep the thread's current study."),
    question: str = typer.Argument(DEFAULT_QUESTION, help="What to ask about the image (with --prior: "
                                   f"default '{COMPARE_QUESTION}')."),
    thread: str = typer.Option(None, "--thread", "-t", help="Conversation id; reuse it to continue (default: new)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not show tool progress."),
    prior: str = typer.Option(None, "--prior", help="An earlier film of the same patient: read first in the "
                              "thread, then IMAGE is compared with it (the order is yours: dates are dropped)."),
) -> None:
    """Ask one question about a chest radiograph; prints the reply and the evidence behind it."""
    import uuid

    from rich.console import Console

    from cli.setup import quiet_hub_bars
    from cxr_agent.settings import get_settings

    out_console, err = Console(), Console(stderr=True)
    settings = get_settings()
    quiet_hub_bars()  # a first demo turn saves the tiny models: our progress lines are the ones shown
    if image != "-" and not Path(image).expanduser().is_file():
        raise typer.BadParameter(f"no such file: {image}", param_hint="IMAGE")
    if prior is not None:
        if image == "-":
            raise typer.BadParameter("--prior needs the current film as IMAGE, not '-'", param_hint="IMAGE")
        if not Path(prior).expanduser().is_file():
            raise typer.BadParameter(f"no such file: {prior}", param_hint="--prior")
        if question == DEFAULT_QUESTION:
            question = COMPARE_QUESTION
    if len(question) > settings.max_message_chars:
        raise typer.BadParameter(f"the question is {len(question):,} characters; the limit is "
                                 f"{settings.max_message_chars:,} (CXR_AGENT_MAX_MESSAGE_CHARS)", param_hint="QUESTION")
    from agents.turn.events import parse_event
    from graph import build_graph, store_image
    from tools.ingestion.study import StudyError

    graph = build_graph(settings)
    thread_id = thread or uuid.uuid4().hex[:12]
    config = {"configurable": {"thread_id": thread_id}}
    inputs: dict = {"messages": [("user", question)]}
    # Ingest here and hand the graph only study ids: a path (often a patient's name or MRN) never reaches
    # the checkpoints.
    for path, key, what in ((prior, "prior_study_id", "prior image"), (image, "study_id", "image")):
        if path is None or path == "-":
            continue
        try:
            inputs[key] = store_image(str(Path(path).expanduser()), graph=graph, thread_id=thread_id)
        except StudyError as exc:
            err.print(f"[red]The {what} was not loaded: {exc}[/red]")
            raise typer.Exit(1) from None
    if prior is not None:
        if inputs["prior_study_id"] == inputs["study_id"]:
            raise typer.BadParameter("IMAGE and --prior are the same image", param_hint="--prior")
        from agents.comparing.patient import thread_salt

        salt, salt_input = thread_salt(graph.get_state(config).values)  # the conversation's, made once
        pair = _pair_from_headers(Path(prior).expanduser(), inputs["prior_study_id"], Path(image).expanduser(),
                                  inputs["study_id"], salt=salt)
        prior_id = inputs["prior_study_id"]
        if pair is not None:  # both headers dated: their order and interval, in this thread only
            inputs["pairs"] = {pair.study_id: pair.model_dump()}
            inputs.update(salt_input)
            del inputs["prior_study_id"]
        if not quiet:
            err.print("[dim]reading the prior study first…[/dim]")
        graph.invoke({"messages": [("user", PRIOR_READ)], "study_id": prior_id}, config)
    from cli.turn_print import print_turn, record_of

    values: dict = {}
    for mode, chunk in graph.stream(inputs, config, stream_mode=["custom", "values"]):
        if mode == "values":  # the last one is graph.invoke's output
            values = chunk
            continue
        event = parse_event(chunk) if not quiet else None
        if event is None:
            continue
        if event["event"] == "route":
            err.print(f"[dim]route: {event['intent']} -> {', '.join(event['tools']) or 'no tools'}[/dim]")
        elif event["event"] == "tool_end":
            status = "[green]ok[/green]" if event["ok"] else f"[red]failed[/red] ({event['error']})"
            what = f" (re-asked about {', '.join(event.get('findings') or [])})" if event.get("purpose") == "verify" else ""
            err.print(f"[dim]{event['tool']}{what}: {status} in {(event['latency_ms'] or 0) / 1000:.1f} s[/dim]")
        elif event["event"] == "verify":
            err.print(f"[dim]verification of {event['finding']}: {event['outcome']}[/dim]")
    print_turn(record_of(values), out_console)  # what the turn did, from its one record
    err.print(f"[dim]thread: {thread_id}  (continue with --thread {thread_id})[/dim]")
