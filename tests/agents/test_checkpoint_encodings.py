"""A Decision already written is not encoded again: a turn's checkpoint encodes only the decisions it changed."""

from __future__ import annotations

import pydantic
import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

import agents.memory.checkpointers as checkpointers
from agents.memory.checkpointers import CHECKPOINT_TYPES, serializer
from knowledge.evidence import Decision, FindingCall, Reason, Status


def _decisions() -> list[Decision]:
    call = FindingCall(finding="cardiomegaly", status=Status.present, source="vlm", text="enlarged heart", span=(4, 18),
                       task="report")
    return [Decision(finding="cardiomegaly", status=Status.present, confidence=0.7, agreeing=["vlm"], calls=[call],
                     rationale="The VLM reports it.", reasons=[Reason(rule="single_source", status=Status.present,
                                                                     present=[call])]),
            Decision(finding="pneumothorax", status=Status.absent, confidence=0.6, agreeing=["vlm"])]


def _dumps_counted(monkeypatch) -> list[str]:
    dumped: list[str] = []
    original = Decision.model_dump

    def counting(self, *args, **kwargs):
        dumped.append(self.finding)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Decision, "model_dump", counting)
    return dumped


def test_the_same_decisions_are_encoded_once_with_the_stock_bytes(monkeypatch) -> None:
    decisions = _decisions()
    dumped = _dumps_counted(monkeypatch)
    ours = serializer()
    stock = JsonPlusSerializer(allowed_msgpack_modules=[(t.__module__, t.__name__) for t in CHECKPOINT_TYPES])
    first = ours.dumps_typed(decisions)
    assert dumped == ["cardiomegaly", "pneumothorax"]
    again = ours.dumps_typed(decisions)  # the next turn: the memo handed back the same objects
    assert dumped == ["cardiomegaly", "pneumothorax"]
    assert first == again == stock.dumps_typed(decisions)
    assert ours.loads_typed(again) == decisions


def test_a_changed_decision_is_a_new_object_and_is_encoded(monkeypatch) -> None:
    decisions = _decisions()
    ours = serializer()
    ours.dumps_typed(decisions)
    dumped = _dumps_counted(monkeypatch)
    changed = [decisions[0].model_copy(update={"status": Status.uncertain, "needs_review": True}), decisions[1]]
    data = ours.dumps_typed(changed)
    assert dumped == ["cardiomegaly"]
    assert ours.loads_typed(data) == changed and ours.loads_typed(data)[0].status is Status.uncertain


def test_the_encodings_are_bounded_and_keep_each_decision_alive() -> None:
    cache = checkpointers._DecisionEncodings(maxsize=2)
    ds = [Decision(finding=f, status=Status.absent, confidence=0.5) for f in ("edema", "mass", "nodule")]
    for d in ds:
        cache.put(d, checkpointers._packed(d, ("m", "n")))
    assert cache.get(ds[0]) is None and cache.get(ds[1]) is not None and cache.get(ds[2]) is not None
    twin = ds[1].model_copy()  # equal, but another object: never served another object's bytes
    assert twin == ds[1] and cache.get(twin) is None


def test_a_decision_cannot_be_changed_in_place() -> None:
    """An encoding served by identity stays true only if a verdict is never changed in place."""
    decision = _decisions()[0]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        decision.status = Status.absent
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        decision.needs_review = True
    assert decision.model_copy(update={"needs_review": True}).needs_review and not decision.needs_review
