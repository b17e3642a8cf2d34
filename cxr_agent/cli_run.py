"""`cxr-agent ui` and `cxr-agent ask`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

UI_APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"


def register(app: typer.Typer) -> None:
    """Attach the top-level run commands to the main app."""
    app.command("ui")(ui)


def ui(
    host: str = typer.Option(None, help="Bind address (default from CXR_AGENT_UI_HOST: 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default from CXR_AGENT_UI_PORT: 8501)."),
    profile: str = typer.Option(
        "auto", help="real | tiny | auto: auto uses real weights when present, else demo (tiny) mode."
    ),
) -> None:
    """Start the Streamlit chat app."""
    from cxr_agent.settings import get_settings

    settings = get_settings()
    env = dict(os.environ)
    if profile == "auto":
        profile = os.environ.get("CXR_AGENT_MODEL_PROFILE") or _auto_profile(settings)
    if profile not in {"real", "tiny"}:
        raise typer.BadParameter(f"profile must be real, tiny or auto, not {profile!r}")
    env["CXR_AGENT_MODEL_PROFILE"] = profile
    if profile == "tiny":
        typer.secho(
            "Starting in DEMO mode: random-weight models, no diagnostic value. "
            "Run `cxr-agent models download` for the real models.",
            fg=typer.colors.YELLOW,
            err=True,
        )
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(UI_APP),
        "--server.address", host or settings.ui_host,
        "--server.port", str(port or settings.ui_port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]
    raise typer.Exit(subprocess.call(cmd, env=env))


def _auto_profile(settings) -> str:
    """'real' only when every configured model's weights are present locally."""
    try:
        from cxr_agent.cli_models import weight_statuses

        statuses = weight_statuses(settings)
    except Exception:  # status check must never stop the app from starting
        return "tiny"
    return "real" if statuses and all(s.present for s in statuses) else "tiny"
