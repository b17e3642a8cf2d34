"""Two studies read in one ingest: which one is the prior, and how many days lie between them.

De-identification drops every date (tools/ingestion/deid.py), so the order and the interval can only be
read while both files' headers are at hand: a two-file upload, or a PACS pull with the prior. What is
kept is a ``StudyPair`` in the conversation's state (never in the shared study store): the two study ids,
the interval in whole days, and each study's patient key (agents/comparing/patient.py). Keys made under
the conversation's salt (``thread_keys``) compare across pairs, so a study read later with another one is
checked against any study of the conversation that has a key; older pairs' keys compare only with each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_PAIRS = 32  # a conversation's pairs, newest kept


class StudyPair(BaseModel):
    """What one ingest of two studies learnt from their headers; kept in the thread only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prior_study_id: str
    study_id: str
    interval_days: int | None = Field(None, ge=0, description="Whole days from the prior to the current study.")
    prior_key: str | None = None  # patient keys: salted hashes
    current_key: str | None = None
    thread_keys: bool = Field(False, description="The keys were made under the conversation's salt (compare "
                                                 "with every such key of the thread), not one ingest's.")


def ordered_pair(a: tuple[str, datetime | None, str | None], b: tuple[str, datetime | None, str | None],
                 *, thread_keys: bool = False) -> StudyPair | None:
    """The pair of two (study id, taken, patient key) readings, earlier first; None when a date is missing
    or both were taken at the same moment (the order cannot be read: the reader must say which is the prior).
    ``thread_keys``: the keys were made under the conversation's salt (``agents.comparing.patient.thread_salt``)."""
    if a[0] == b[0] or a[1] is None or b[1] is None or a[1] == b[1]:
        return None
    prior, current = (a, b) if a[1] < b[1] else (b, a)
    return StudyPair(prior_study_id=prior[0], study_id=current[0], interval_days=(current[1] - prior[1]).days,
                     prior_key=prior[2], current_key=current[2], thread_keys=thread_keys)


def patient_keys(pairs: Any, prior_id: str, current_id: str) -> tuple[str | None, str | None]:
    """The two studies' patient keys to compare: the pair that holds both, else each study's key from any pair
    made under the conversation's salt (the newest such pair naming the study); None where a study has none."""
    held = as_pairs(pairs)
    direct = held.get(current_id)
    if direct is not None and direct.prior_study_id == prior_id:
        return direct.prior_key, direct.current_key
    keys: dict[str, str] = {}
    for pair in held.values():
        if pair.thread_keys:
            keys.update({sid: k for sid, k in ((pair.prior_study_id, pair.prior_key),
                                                (pair.study_id, pair.current_key)) if k})
    return keys.get(prior_id), keys.get(current_id)


def as_pairs(value: Any) -> dict[str, StudyPair]:
    """The state's ``pairs`` channel (keyed by the current study id), from models or their dumps."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v if isinstance(v, StudyPair) else StudyPair.model_validate(v) for k, v in value.items()}


def merge_pairs(left: Any, right: Any) -> dict[str, dict[str, Any]]:
    """The channel's reducer: a new pair for a study replaces the old one; the newest ``MAX_PAIRS`` are kept.
    Stored as plain dicts (checkpoints keep no new types); ``as_pairs`` reads them back. A malformed input
    raises ValueError naming ``pairs``."""
    if right is not None and not isinstance(right, Mapping):
        raise ValueError(f"invalid graph input: pairs must map a current study id to its StudyPair, not "
                         f"{type(right).__name__}")
    try:
        new = as_pairs(right)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"invalid graph input: pairs holds a malformed StudyPair ({first['msg']} at "
                         f"{'.'.join(str(x) for x in first['loc'])})") from None
    merged = {**as_pairs(left), **new}
    return {k: v.model_dump() for k, v in list(merged.items())[-MAX_PAIRS:]}
