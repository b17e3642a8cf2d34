"""The change reply: which study is the prior, whether they can be the same patient, and one table of change.

It says that the reader gave the order (ingest drops every date, so the files cannot tell which film is
earlier), and that a classifier score is confidence, not size: a "stable" row from it means "still there".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agents.comparing.decide import ChangeDecision, ChangeReason
from agents.comparing.patient import PatientCheck
from knowledge.markdown import defang
from knowledge.vocabulary import display_name

CHANGE_WORDS = {"new": "new", "worse": "worse", "stable": "stable", "improved": "improved", "resolved": "resolved",
                "cannot_compare": "cannot compare"}
SCORE_NOTE = ("A classifier score is the model's confidence, not the size of a finding: it can show a finding is "
              "new, resolved or still there, never worse or improved.")
NO_DIRECT = "No tool here reads the two films together, so nothing below is graded worse or improved."


def _status(value: object) -> str:
    return "—" if value is None else str(getattr(value, "value", value))


def _score_move(r: ChangeReason) -> str:
    return f"{r.before_score:.2f} → {r.now_score:.2f}" if r.before_score is not None and r.now_score is not None else ""


def sources_cell(d: ChangeDecision, labels: Mapping[str, str]) -> str:
    """Who supports the row and who differs, with the classifier's two scores and a writer's two statements."""
    def name(s: str | None) -> str:
        return labels.get(s or "", f"tool '{s}'")

    parts = []
    for r in d.reasons:
        if r.rule.startswith("score_") and r.before_score is not None:
            parts.append(f"{name(r.source)} {_score_move(r)}")
        elif r.rule == "stated":
            parts.append(f"{name(r.source)} says {CHANGE_WORDS.get(r.change or '', r.change)}")
        elif r.rule in ("reask_agrees", "reask_maintained", "reask_unresolved"):
            said = "said nothing about it" if r.change == "cannot_compare" else \
                f"says {CHANGE_WORDS.get(r.change or '', r.change)}"
            parts.append(f"{name(r.source)} asked again, {said}"
                         + {"reask_agrees": " (settled)", "reask_maintained": " again"}.get(r.rule, ""))
        elif r.rule == "statement_agrees":
            parts.append(f"{name(r.source)} {_status(r.before)} → {_status(r.now)} (two separate reads)")
        elif r.rule == "statement_differs":
            parts.append(f"{name(r.source)} differs: {_status(r.before)} → {_status(r.now)}"
                         + (" (possible change, check)" if r.before != r.now else ""))
    if d.conflict:
        parts.append("sources disagree")
    return "; ".join(parts) or "no source read both studies"


def change_lines(changes: Sequence[ChangeDecision], *, prior_id: str, current_id: str, named_by_reader: bool,
                 patient: PatientCheck, films: Sequence[ChangeReason] = (), labels: Mapping[str, str] | None = None,
                 direct: bool = False, interval_days: int | None = None) -> tuple[str, ...]:
    """The opening of a comparison reply (Markdown lines). ``direct``: some tool compares priors itself.
    ``interval_days``: the two were loaded together and their headers gave the order and the interval."""
    labels = labels or {}
    if interval_days is not None and not named_by_reader:
        days = "the same day" if interval_days == 0 else f"{interval_days} day{'s' if interval_days != 1 else ''} earlier"
        lines = ["### Compared with the prior study",
                 f"Prior: `{prior_id[:12]}`, taken {days}; current: `{current_id[:12]}`. Order and interval come "
                 "from the two files' headers, read when they were loaded together (the dates themselves are not kept)."]
    else:
        which = ("the study you named as the prior" if named_by_reader
                 else "the study read before this one in this conversation")
        lines = ["### Compared with the prior study",
                 f"Prior: `{prior_id[:12]}` ({which}); current: `{current_id[:12]}`. The order is yours: dates are "
                 "removed when an image is loaded, so which film is earlier is not read from the files."]
    if patient.verdict == "unconfirmed":
        lines.append(f"**Not confirmed to be the same patient:** {patient.reason}.")
    for r in films:
        if r.rule == "view_differs":
            lines.append(f"**Different projection ({r.detail}):** heart size and effusions can look different from "
                         "the projection alone; every change's confidence is lowered.")
        elif r.rule == "position_differs":
            lines.append(f"**Different patient position ({r.detail}):** fluid and air move with position; every "
                         "change's confidence is lowered.")
    if not changes:
        lines.append("No finding was called present or uncertain on either study, so there is no change to show.")
        return tuple(lines)
    table = ["| finding | before | now | change | sources |", "|---|---|---|---|---|"]
    for d in changes:
        change = CHANGE_WORDS[d.change] + (" (needs review)" if d.needs_review else "")
        if d.change != "cannot_compare":
            change += f", conf. {d.confidence:.2f}"
        table.append(f"| {display_name(d.finding)} | {_status(d.before)} | {_status(d.now)} | {change} | "
                     f"{sources_cell(d, labels)} |")
    lines.append("\n".join(table))
    lines.append(f"_{SCORE_NOTE}{'' if direct else ' ' + NO_DIRECT}_")
    return tuple(lines)


def unread_line(label: str, error: str | None) -> str:
    """A tool that reads both films together failed: the rows then rest on each study's own reads."""
    why = f" ({defang(error)})" if error else ""
    return (f"_Not compared directly: {label} could not read the two films together{why}; the rows below rest "
            "on each study's own reads._")


def refusal_lines(patient: PatientCheck) -> tuple[str, ...]:
    """The opening when the two studies cannot be one patient's."""
    return (f"**Not compared: {patient.reason}, so they are not the same patient's.** Upload the patient's own "
            "prior study to compare.",)


def missing_prior_line(prior_id: str) -> str:
    return (f"**Not compared:** the study named as the prior (`{prior_id[:12]}`) was not read in this "
            "conversation. Upload it and ask about it first, then compare.")
