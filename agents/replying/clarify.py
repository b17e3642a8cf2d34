"""The words of a clarifying question: when the router is unsure (``Route.clarify``), the reply asks one short
question with the two likeliest readings instead of running tools on a guess.

Each reading has a label (the button's help text) and a message: what the user sends to pick it (the UI's
buttons send it; through ``graph.invoke`` the user types it). Every message routes, with certainty, to its
reading (tests/agents/test_router_clarify.py checks that), so a choice never leads to a second question.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.routing.rules import GENERAL_PREFIX, Clarify, Reading
from knowledge.vocabulary import display_name


def _reading(reading: Reading | Mapping[str, Any]) -> Reading:
    return reading if isinstance(reading, Reading) else Reading.model_validate(dict(reading))


def _readings(clarify: Clarify | Mapping[str, Any]) -> list[Reading]:
    """The two readings of the router's ``Clarify`` (or of its fields as a mapping), typed."""
    readings = clarify.readings if isinstance(clarify, Clarify) else clarify["readings"]
    return [_reading(r) for r in readings[:2]]


def _target(reading: Reading) -> str | None:
    if reading.finding:
        return display_name(reading.finding).lower()
    if reading.phrase:
        return f"'{reading.phrase}'"
    return None


def label(reading: Reading | Mapping[str, Any]) -> str:
    """One reading in words ("whether there is a pneumothorax"): the help text of its button."""
    reading = _reading(reading)
    intent, target = reading.intent, _target(reading)
    if intent == "report":
        return "a full report of this study"
    if intent == "locate":
        return f"where the {target} is on the image" if target else "where something is on the image"
    if intent == "finding_question":
        if reading.phrase and not reading.finding:
            return f"whether there is {target}, in your words (not a finding the tools know by name)"
        return f"whether there is {target}" if target else "whether a finding is present"
    if intent == "similar_cases":
        return f"similar cases with {target} from the report archive" if target else "similar cases from the report archive"
    if intent == "explain":
        return "why I concluded what I did"
    return "a general answer, without reading the image"


def message(reading: Reading | Mapping[str, Any], original: str = "") -> str:
    """What the user sends to pick one reading."""
    reading = _reading(reading)
    intent, target = reading.intent, _target(reading)
    if intent == "report":
        return "Write a full report of this study."
    if intent == "locate" and target:
        return f"Where is the {target} on the image?"
    if intent == "finding_question" and target:
        return f"Is there {target}?"
    if intent == "similar_cases":
        return f"Find similar cases with {target}." if target else "Find similar cases."
    if intent == "explain":
        return "Why did you conclude that?"
    return f"{GENERAL_PREFIX} {original}".strip()


def question(clarify: Clarify | Mapping[str, Any], original: str = "") -> str:
    """The reply: one short question offering the two likeliest readings as lines the user can send back."""
    a, b = _readings(clarify)
    about = clarify.about if isinstance(clarify, Clarify) else clarify.get("about")
    what = "which finding you mean" if about == "finding" else "what you are asking"
    lines = [f"I am not sure {what}. Which of these did you mean? Reply with one of them:", "",
             f"1. {message(a, original)}", f"2. {message(b, original)}"]
    own = [r.phrase for r in (a, b) if r.phrase and not r.finding]
    if own:
        lines += ["", f"('{own[0]}' is not a finding the tools know by name: it would be asked in your words.)"]
    return "\n".join(lines)


def choices(clarify: Clarify | Mapping[str, Any], original: str = "") -> list[dict[str, str]]:
    """The two readings as button data: ``{"label", "message"}``."""
    return [{"label": label(r), "message": message(r, original)} for r in _readings(clarify)]
