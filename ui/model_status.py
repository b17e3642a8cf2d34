"""What the sidebar says about the models: present, missing (with the fix) or demo.

Reads only the model catalogue (``tools.catalogue.weight_statuses``, the same check `cxr-agent
models list` prints), so the app and the CLI never disagree: under the demo profile that includes
whether `cxr-agent setup` has built the demo models. Any failure of the check becomes a line, not a crash.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

from cxr_agent.settings import Settings

log = logging.getLogger(__name__)


STATE_ICONS = {  # Streamlit's bundled Material Symbols: render in every browser, unlike emoji
    "present": ":material/check_circle:",
    "missing": ":material/cancel:",
    "demo": ":material/science:",
}


@dataclass(frozen=True)
class StatusLine:
    """One model (or the index) as the sidebar shows it."""

    name: str
    state: str  # "present" | "missing" | "demo" | "unknown"
    detail: str = ""
    fix: str | None = None

    @property
    def icon(self) -> str:
        return STATE_ICONS.get(self.state, ":material/help:")

    def markdown(self, *, with_fix: bool = True) -> str:
        text = f"{self.icon} **{self.name}** - {self.state}"
        if self.detail:
            text += f": {self.detail}"
        if self.fix and with_fix:
            text += f"  \nFix: `{self.fix}`"
        return text


def model_status_lines(settings: Settings) -> list[StatusLine]:
    """One line per configured model; under the tiny profile the real weights' status is kept
    (so the user sees what `cxr-agent models download` would add) and a demo line leads."""
    lines: list[StatusLine] = []
    if settings.is_demo:
        lines.append(
            StatusLine(
                "Demo (tiny) models",
                "demo",
                "random-weight VLM and classifier of the real architectures are in use (no diagnostic value)",
            )
        )
    try:
        from tools.catalogue import weight_statuses

        statuses = weight_statuses(settings)
    except Exception as exc:  # the panel reports, it never breaks the app
        log.warning("model status check failed: %s", exc)
        lines.append(StatusLine("Model weights", "unknown", f"status check unavailable ({type(exc).__name__})"))
        return lines
    for s in statuses:
        state = "present" if s.present else "missing"
        detail = _short(s.location) if s.present else (s.detail or f"not found at {_short(s.location)}")
        lines.append(StatusLine(s.name, state, detail, None if s.present else s.fix))
    return lines


def _short(location: str, keep: int = 2) -> str:
    """A long path shortened to its last parts (the sidebar is narrow); URLs and short text as is."""
    if len(location) <= 40 or "://" in location:
        return location
    parts = Path(location).parts
    return str(Path("...", *parts[-keep:])) if len(parts) > keep else location


def index_present(settings: Settings) -> bool:
    """Whether a prior-report index has been built (else the first report builds it)."""
    d = Path(settings.resolved_index_dir)
    try:
        return d.is_dir() and any(p.is_file() for p in d.rglob("*"))
    except OSError:
        return False


def tool_load_states(graph_or_tools: object) -> dict[str, bool]:
    """Per tool in the graph (or a name -> tool mapping): whether its model is loaded in this
    server process yet.

    Built-in tools are constructed lazily (tools.registry.LazyTool), so "not loaded" just means
    no turn has needed them yet. Custom tools count as loaded.
    """
    if isinstance(graph_or_tools, dict):
        tools = graph_or_tools
    else:
        from graph import runtime

        try:
            tools = runtime(graph_or_tools).tools
        except ValueError:  # not a graph build_graph made
            tools = {}
    out: dict[str, bool] = {}
    for name, tool in tools.items():
        # getattr_static: a LazyTool's __getattr__ would load the model for an unknown name.
        flag = inspect.getattr_static(tool, "loaded", None)
        if isinstance(flag, property):
            out[str(name)] = bool(flag.__get__(tool))
        else:
            out[str(name)] = bool(flag) if isinstance(flag, bool) else True
    return out
