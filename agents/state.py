"""The graph's state: references, the study's ledger and decisions, never pixel arrays.

``evidence`` holds what THIS turn used (run, or reused from the ledger and marked so): the first
node of every turn writes ``None`` to it (the reset marker), then parallel tool branches append.
``ledger`` (agents/memory/ledger.py) is every output recorded on the thread's current study, and
``decisions`` that study's decisions, reconciled from the whole ledger by every reconciling turn
(so a turn about one finding never re-decides the others from its own slice); ``explain`` answers
from them without running a tool. ``record`` is the turn's ``TurnRecord`` (agents/turn/record.py),
in ``graph.invoke``'s output but not checkpointed (everything in it is in the ledger, the decisions
or the reply). ``last_result`` is only read: checkpoints written before the ledger kept the latest
reconciled turn there; the next reconciling turn reads it into the ledger and clears it. ``image`` is an untracked
channel: it is read by ingest within the turn and never written into a checkpoint channel
(the raw invoke input is still recorded once by LangGraph; pass a ``study_id`` of an
already stored study to keep image bytes out of checkpoints entirely).

``CxrInput`` is the graph's input schema (``StateGraph(..., input_schema=CxrInput)``): the only
keys ``graph.invoke`` takes. LangGraph does not validate a dict input against it, so the ingest
node checks the values it got with ``validate_input`` (a precise ValueError naming the key).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.graph.message import add_messages
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.comparing.pair import merge_pairs
from agents.comparing.patient import keep_salt
from agents.memory.ledger import EarlierStudy, StudyLedger
from agents.routing.rules import Route
from agents.turn.record import TurnRecord
from knowledge.evidence import Decision, Evidence


def per_turn(left: list | None, right: list | None) -> list:
    """Append reducer that a ``None`` update resets (one reset per turn, then branches append)."""
    if right is None:
        return []
    return [*(left or []), *right]


class CxrState(TypedDict, total=False):
    """State of one conversation thread.

    Input keys: ``messages`` (the user turn), optionally ``image`` (path, bytes) with
    ``image_name`` (file name for bytes), or ``study_id`` (an id already in the StudyStore).
    """

    messages: Annotated[list[AnyMessage], add_messages]
    image: Annotated[Any, UntrackedValue(Any)]
    image_name: Annotated[str | None, UntrackedValue(Any)]
    study_id: str | None
    prior_study_id: Annotated[str | None, UntrackedValue(Any)]  # this turn only: the study to compare with
    route: Route | None  # this turn's (a plain dict in older checkpoints: read it with agents.routing.as_route)
    evidence: Annotated[list[Evidence], per_turn]
    ledger: StudyLedger | None  # every output recorded on the study the decisions are about
    decisions: list[Decision]  # that study's decisions, from its whole ledger (written whole, never merged)
    earlier: dict[str, EarlierStudy]  # the conversation's earlier studies: their ledgers and decisions
    # studies read as a pair in one ingest, by current study id: the prior, the interval, patient keys
    pairs: Annotated[dict[str, dict[str, Any]], merge_pairs]
    # the conversation's patient-key salt (hex): made once, kept here only (agents/comparing/patient.py)
    patient_salt: Annotated[str, keep_salt]
    notes: Annotated[list[str], per_turn]
    ingest_error: str | None  # why this turn's input was not used (its image, or an over-long message)
    last_result: dict[str, Any] | None  # read-only: what checkpoints before the ledger kept
    # this turn only, never checkpointed: the decisions as they stood before it, and its record
    decisions_before: Annotated[list[Decision] | None, UntrackedValue(Any)]
    record: Annotated[TurnRecord | None, UntrackedValue(Any)]
    # time.monotonic() by which this turn must be done (set by ingest; never checkpointed)
    deadline: Annotated[float | None, UntrackedValue(Any)]


INPUT_KEYS = ("messages", "image", "image_name", "study_id")
RAW_INPUT_KEYS = ("image", "image_name")  # what a checkpoint must never keep (raw bytes, a file name)


class CxrInput(BaseModel):
    """What ``graph.invoke`` accepts: the user turn, and optionally a new image or a stored study.

    ``image``: a file path or the file's bytes (then ``image_name`` names the file, for its format);
    ``study_id``: the id ``graph.store_image`` returned (keeps the bytes out of checkpoints).
    Later turns of a thread may omit both: the thread remembers its study.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    messages: Annotated[list[AnyMessage], add_messages] = Field(default_factory=list)
    image: Annotated[str | os.PathLike | bytes | bytearray | None, UntrackedValue(Any)] = None
    image_name: Annotated[str | None, UntrackedValue(Any)] = None
    study_id: str | None = None
    # the earlier study a comparison reads against (the reader's order: ingest drops every date)
    prior_study_id: Annotated[str | None, UntrackedValue(Any)] = None
    # two studies read in one ingest (agents.comparing.pair.StudyPair dumps, by current study id): kept
    pairs: Annotated[dict[str, dict[str, Any]] | None, merge_pairs] = None
    # the conversation's patient-key salt, sent once with the first keys made under it (then kept)
    patient_salt: Annotated[str | None, keep_salt] = None

    @field_validator("study_id")
    @classmethod
    def _study_id(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("study_id is empty: pass the id graph.store_image returned, or omit it")
        return v


class CxrServerInput(BaseModel):
    """The input schema a LangGraph Server deployment offers: no raw image, only a stored study's id
    (the server ingests uploads itself and refuses runs that carry ``image``/``image_name``). No
    ``patient_salt``: the server keeps a thread's salt and keys in its state (server/pairs.py)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    messages: Annotated[list[AnyMessage], add_messages] = Field(default_factory=list)
    study_id: str | None = None
    prior_study_id: Annotated[str | None, UntrackedValue(Any)] = None  # owner-checked by server/auth.py
    # two studies read as a pair: order and interval only (owner-checked by server/auth.py; a pair with patient
    # keys is refused there: keys are made by the server from the headers, POST /cxr/studies/pair)
    pairs: Annotated[dict[str, dict[str, Any]] | None, merge_pairs] = None


class GraphInputError(ValueError):
    """graph.invoke got an input value of the wrong kind; the message names the key."""


def validate_input(state: dict[str, Any]) -> None:
    """Raise GraphInputError naming the key when ``image``, ``image_name`` or ``study_id`` has the
    wrong type (checked here, not by re-validating CxrInput: the message list is already parsed)."""
    image, name, study_id = state.get("image"), state.get("image_name"), state.get("study_id")
    if image is not None and not isinstance(image, str | os.PathLike | bytes | bytearray):
        raise GraphInputError(f"invalid graph input: image must be a file path or the file's bytes, "
                              f"not {type(image).__name__}")
    if name is not None and not isinstance(name, str):
        raise GraphInputError(f"invalid graph input: image_name must be a file name (str), not {type(name).__name__}")
    prior = state.get("prior_study_id")
    if prior is not None and (not isinstance(prior, str) or not prior.strip()):
        raise GraphInputError("invalid graph input: prior_study_id must be the id string of a study read earlier in "
                              f"this conversation, not {prior!r}"[:200])
    if study_id is not None and (not isinstance(study_id, str) or not study_id.strip()):
        raise GraphInputError("invalid graph input: study_id must be the id string graph.store_image returned, "
                              f"not {study_id!r}"[:200])
