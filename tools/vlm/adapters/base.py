"""The adapter contract: everything model-family specific about talking to a VLM.

A model family (RadVLM, MedGemma, ...) was trained on its own instructions, answers in its own
shapes and writes boxes in its own notation. An ``Adapter`` owns exactly those three things:

- ``prompt(task, key=..., target=...)`` -> the ``Prompt`` to send for a task (one of the family's
  trained instruction variants, chosen deterministically from ``key``), or None when the family has
  no trained instruction for that task (the tool then says so instead of improvising one);
- ``parse(task, answer, view, ...)`` -> ``Parsed``: FindingCalls, box locations mapped back to the
  ORIGINAL image through ``view``, the answer shape that matched, and notes. Never raises: an
  answer that fits no shape comes back as ``shape="text"`` with a note;
- ``system`` (a system turn or None) and ``localises`` (whether the family writes boxes at all);
- loading facts for the local backend: ``hf_class`` and ``tiny_loader`` (its random offline stand-in).

The VLMTool and the backends know nothing family-specific; adding a family is one new module in
``tools/vlm/adapters/`` registered in ``tools/vlm/adapters/__init__.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from knowledge.evidence import Box, FindingCall
from tools.vlm.geometry import Coords, ModelView

Task = Literal[
    "report",  # free-text report
    "classification",  # exhaustive abnormality list (one statement per label of the family's set)
    "detection",  # abnormalities with boxes
    "grounding",  # where is <named finding>
    "region",  # where is <anatomical region>
    "phrase_grounding",  # where is <report phrase>
    "foreign_objects",  # devices / foreign objects with boxes
    "question",  # conversational yes/no about one finding
    "chat",  # free conversation (the user's own words)
]
TASKS: tuple[Task, ...] = ("report", "classification", "detection", "grounding", "region", "phrase_grounding",
                           "foreign_objects", "question", "chat")
# Tasks whose boxes say WHERE something asked about would be, never THAT it is there.
LOCATION_ONLY: frozenset[str] = frozenset({"grounding", "region", "phrase_grounding"})
# Tasks whose instruction depends on the study alone (picked by its key), never on the user's words or a
# finding the user named: their answers (and the model's cached image) may be shared across conversations.
FIXED_PROMPT: frozenset[str] = frozenset({"report", "classification", "detection"})


@dataclass(frozen=True)
class Prompt:
    task: Task
    text: str
    image_first: bool = True  # image before the instruction in the first user turn


@dataclass(frozen=True)
class Location:
    """One box the model drew, in ORIGINAL-image fractions, and what it was drawn for."""

    box: Box
    model_coords: Coords
    target: str  # the label / region / phrase as asked or as the answer named it
    finding: str | None  # vocabulary id when the target maps to one
    task: str


@dataclass
class Parsed:
    task: str
    shape: str  # which answer shape matched: "list", "none", "boxes", "yes_no", "text", ...
    calls: list[FindingCall] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # bracketed texts that were not usable boxes


@runtime_checkable
class Adapter(Protocol):
    family: str  # "radvlm", "medgemma", ...
    display_name: str  # "RadVLM": what replies call it
    localises: bool  # writes boxes in a documented notation
    system: str | None  # a system turn to send first, or None
    hf_class: str  # transformers class the local backend loads (e.g. "LlavaOnevisionForConditionalGeneration")
    tiny_loader: str  # "module:function" -> (model, processor) of the offline random stand-in

    def prompt(self, task: Task, *, key: str, target: str | None = None) -> Prompt | None: ...

    def parse(self, task: Task, answer: str, view: ModelView | None, *, target: str | None = None,
              finding: str | None = None, source: str = "vlm") -> Parsed: ...


def pick(variants: Sequence[str], key: str) -> str:
    """One of ``variants``, the same for the same key in every process (no Python hash seed)."""
    if not variants:
        raise ValueError("no variants to pick from")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return variants[int.from_bytes(digest[:8], "big") % len(variants)]
