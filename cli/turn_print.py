"""What `cxr-agent ask` prints of a turn, read from the turn's one record (agents/turn/record.py).

Why the record: it is what the graph itself says the turn did (reply, evidence run or reused, the study's
decisions and which changed, the tools that were unavailable, the artifacts), so the terminal shows what
the UI shows, never a reading of the reply's payload or of the checkpointed state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from agents.turn.record import TurnRecord
from knowledge.evidence import Status
from knowledge.markdown import defang
from knowledge.vocabulary import display_name


class NoTurnRecord(RuntimeError):
    """The graph's output for a turn carried no turn record."""


def record_of(values: Mapping[str, Any] | None) -> TurnRecord:
    """The turn record in ``graph.invoke``'s output (a dict from a server is validated)."""
    found = (values or {}).get("record")
    if found is None:
        raise NoTurnRecord("the graph's output for this turn has no 'record' (a graph not built by graph.build_graph?)")
    return found if isinstance(found, TurnRecord) else TurnRecord.model_validate(found)


def print_turn(record: TurnRecord, out: Console) -> None:
    """The reply, then the study's decisions, this turn's evidence, unavailable tools and artifacts."""
    out.print(Markdown(defang(record.reply)))  # model/corpus text: no links, no images
    if record.decisions:
        out.print(decisions_table(record))
    if record.evidence:
        out.print(evidence_table(record))
    if record.unavailable:
        out.print(f"Unavailable this turn: {', '.join(record.unavailable)}")
    if line := artifacts_line(record):
        out.print(line)


def decisions_table(record: TurnRecord) -> Table:
    """One row per decision the study holds after the turn; 'changed' says what this turn moved and why."""
    changed = {c.finding: c for c in record.changed}
    table = Table(title=f"Decisions on the study ({len(changed)} changed this turn)", show_lines=False)
    for col in ("finding", "status", "conf.", "review", "changed"):
        table.add_column(col)
    for d in record.decisions:
        c = changed.get(d.finding)
        moved = "" if c is None else (
            ("new" if c.before is None else f"was {c.before.value}")
            + (f" ({', '.join(c.because)})" if c.because else ""))
        table.add_row(display_name(d.finding), d.status.value, f"{d.confidence:.2f}",
                      "[red]yes[/red]" if d.needs_review else "", moved)
    return table


def evidence_table(record: TurnRecord) -> Table:
    """One row per output the turn used: run now, reused from the study's ledger, or a re-ask."""
    table = Table(title="Evidence this turn", show_lines=False)
    for col in ("tool", "ok", "latency", "calls (present / uncertain)", "note"):
        table.add_column(col)
    for item in record.evidence:
        ev = item.evidence
        calls = ", ".join(
            f"{c.finding}{'?' if c.status is Status.uncertain else ''}" + (f" {c.score:.2f}" if c.score is not None else "")
            for c in ev.calls if c.status is not Status.absent)
        note = ev.error or ev.answer or (f"{len(ev.neighbors)} neighbours" if ev.neighbors else "")
        if item.verification:
            note = f"re-ask: {ev.meta.get('verification')}. {note}"
        latency = "reused" if item.reused else f"{(ev.latency_ms or 0) / 1000:.2f} s"
        table.add_row(item.tool, "yes" if ev.ok else "[red]no[/red]", latency, calls or "-", (note or "")[:80])
    return table


def artifacts_line(record: TurnRecord) -> str:
    """The turn's artifacts by kind and finding ("" when none): heatmaps and boxes are drawn in the UI."""
    kinds: dict[str, list[str]] = {}
    for a in record.artifacts:
        names = kinds.setdefault(a.kind, [])
        name = display_name(a.finding) if a.finding else "-"
        if name not in names:
            names.append(name)
    if not kinds:
        return ""
    return "Artifacts: " + "; ".join(f"{kind} ({', '.join(names)})" for kind, names in kinds.items())
