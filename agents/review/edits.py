"""A reader's edits as plain data: per-finding actions, added findings and the report text.

Why plain data: the review table in the UI and the graph server's review route both receive the same
rows (``{"id", "action", "note"}``), so one function applies them, whoever sends them. Only rows
whose action or note differs from the review are applied, so resending an unchanged table adds no
audit line. A study compared with a prior has a second table of the same shape, its change rows, whose
action is accept, reject or the change value the reader sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agents.review.model import CHANGE_VALUES, Review, ReviewError
from knowledge.vocabulary import FINDINGS, display_name, normalize

NO_ACTION = "—"
ACTIONS = (NO_ACTION, "accept", "reject", "present", "absent", "uncertain")  # the last three: change to
CHANGE_ACTIONS = (NO_ACTION, "accept", "reject", *CHANGE_VALUES)  # after reject: change to that value


def current_action(review: Review, finding: str) -> str:
    """The action a row shows for ``finding``: accept, reject, the changed-to status, or NO_ACTION."""
    it = review.item(finding)
    if it.action in ("accepted", "rejected"):
        return "accept" if it.action == "accepted" else "reject"
    return it.status.value if it.action and it.status else NO_ACTION


def current_change_action(review: Review, finding: str) -> str:
    """The action a change row shows: accept, reject, the changed-to value, or NO_ACTION."""
    row = review.change_row(finding)
    if row.action in ("accepted", "rejected"):
        return "accept" if row.action == "accepted" else "reject"
    return row.change if row.action and row.change else NO_ACTION


def apply_change_edits(review: Review, rows: Sequence[Mapping[str, Any]]) -> Review:
    """Apply the change rows' actions (only those that differ); an unknown finding or action is refused."""
    for row in rows:
        if not isinstance(row, Mapping) or not isinstance(row.get("id"), str):
            raise ReviewError("each change row needs an 'id' (the finding id) and an 'action'")
        fid = row["id"]
        action, note = str(row.get("action") or NO_ACTION), str(row.get("note") or "")
        if action not in CHANGE_ACTIONS:
            raise ReviewError(f"change row {fid!r}: action must be one of {', '.join(CHANGE_ACTIONS[1:])} "
                              f"(got {action!r})")
        it = review.change_row(fid)
        if action == NO_ACTION or (action == current_change_action(review, fid) and note.strip() == it.note):
            continue
        if action == "accept":
            review.accept_change(fid, note)
        elif action == "reject":
            review.reject_change(fid, note)
        else:
            review.set_change(fid, action, note)
    return review


def apply_edits(review: Review, rows: Sequence[Mapping[str, Any]], added: Sequence[str] = (),
                report_text: str | None = None, change_rows: Sequence[Mapping[str, Any]] = ()) -> Review:
    """Apply the rows' actions (only those that differ), add the named findings (present), set the
    report text and apply the change rows; a row naming an unknown finding or action is refused with a
    ``ReviewError``."""
    for row in rows:
        if not isinstance(row, Mapping) or not isinstance(row.get("id"), str):
            raise ReviewError("each row needs an 'id' (the finding id) and an 'action'")
        fid = row["id"]
        action, note = str(row.get("action") or NO_ACTION), str(row.get("note") or "")
        if action not in ACTIONS:
            raise ReviewError(f"row {fid!r}: action must be one of {', '.join(ACTIONS[1:])} (got {action!r})")
        it = review.item(fid)
        if action == NO_ACTION or (action == current_action(review, fid) and note.strip() == it.note):
            continue
        if action == "accept":
            review.accept(fid, note)
        elif action == "reject":
            review.reject(fid, note)
        else:
            review.change(fid, action, note)
    present = {it.finding for it in review.items}
    names = {display_name(f): f for f in FINDINGS}
    for name in added:
        fid = names.get(name) or normalize(str(name))
        if fid is None:
            raise ReviewError(f"{name!r} is not a finding of the vocabulary")
        if fid not in present:
            review.add(fid)
            present.add(fid)
    if report_text is not None:
        review.edit_report(report_text)
    return apply_change_edits(review, change_rows)
