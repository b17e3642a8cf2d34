"""knowledge/bounded_memo.py: a memo bounded in bytes as well as entries, so a long-lived server's memos stop
growing at a size one can name, whatever the size of what they keep."""

from __future__ import annotations

import pytest

from agents.memory.ledger import Ask, SharedOutputs, key_for
from agents.reconciling.memo import DecisionMemo
from agents.reconciling.policy import Policy
from cxr_agent.settings import get_settings
from knowledge.bounded_memo import MIB, BoundedMemo, approx_bytes
from knowledge.evidence import Decision, Evidence, FindingCall, Status


def test_bytes_bound_drops_the_least_recently_used_below_the_entry_bound():
    memo: BoundedMemo[str] = BoundedMemo(maxsize=10_000, max_mib=1)
    for i in range(100):  # 100 x ~100 KiB: ten times the bound, far below the entry count
        memo.store(i, f"{i:06d}" + "x" * 100_000)
        assert memo.nbytes <= MIB
    assert 5 <= len(memo) < 11
    assert memo.lookup(99) is not None and memo.lookup(0) is None
    assert memo.nbytes == sum(approx_bytes(k) + approx_bytes(memo.lookup(k)) for k in range(100) if memo.lookup(k))


def test_replacing_an_entry_counts_it_once_and_clear_forgets_the_bytes():
    memo: BoundedMemo[str] = BoundedMemo(maxsize=10, max_mib=1)
    memo.store("k", "a" * 1000)
    memo.store("k", "b" * 2000)
    assert len(memo) == 1 and memo.nbytes == approx_bytes("k") + approx_bytes("b" * 2000)
    memo.clear()
    assert len(memo) == 0 and memo.nbytes == 0


def test_a_value_larger_than_the_whole_memo_is_not_kept_and_evicts_nothing():
    memo: BoundedMemo[bytes] = BoundedMemo(maxsize=10, max_mib=0.5)
    memo.store("small", b"s" * 100)
    memo.store("huge", b"h" * MIB)
    assert memo.lookup("huge") is None and memo.lookup("small") is not None


def test_the_bound_is_read_from_settings_when_not_given(monkeypatch):
    monkeypatch.setenv("CXR_AGENT_MEMO_MAX_MIB", "0.25")
    get_settings.cache_clear()
    try:
        memo: BoundedMemo[str] = BoundedMemo(maxsize=10_000)
        for i in range(50):
            memo.store(i, "y" * 20_000)
        assert memo.max_mib == 0.25 and memo.nbytes <= 0.25 * MIB and len(memo) < 50
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("kwargs, word", [({"maxsize": 0}, "maxsize"), ({"max_mib": 0}, "max_mib")])
def test_bad_bounds_are_refused_by_name(kwargs, word):
    with pytest.raises(ValueError, match=word):
        BoundedMemo(**kwargs)


def test_approx_bytes_reaches_into_models_and_counts_shared_objects_once():
    short = Decision(finding="cardiomegaly", status=Status.present, confidence=0.8, rationale="r")
    long = short.model_copy(update={"rationale": "r" * 50_000})
    assert approx_bytes(long) - approx_bytes(short) >= 49_900
    text = "z" * 10_000
    assert approx_bytes([text, text]) < approx_bytes([text, "w" * 10_000])


def test_approx_bytes_reaches_into_named_tuples_and_slotted_objects():
    from typing import NamedTuple

    class Mention(NamedTuple):
        cue: str
        start: int

    class Slotted:
        __slots__ = ("text",)

        def __init__(self, text: str) -> None:
            self.text = text

    assert approx_bytes((Mention("c" * 20_000, 3),)) >= 20_000
    assert approx_bytes(Slotted("s" * 20_000)) >= 20_000
    assert approx_bytes({"k": Status.present, "n": None}) < 1_000  # enum members are shared: not counted


def test_decision_memo_does_not_count_the_shared_policy_per_entry():
    memo = DecisionMemo(max_mib=1)
    policy = Policy()
    call = FindingCall(finding="cardiomegaly", status=Status.present, source="vlm", text="Enlarged heart.")
    key = DecisionMemo.key("cardiomegaly", [call])
    decision = Decision(finding="cardiomegaly", status=Status.present, confidence=0.7)
    memo.put(policy, key, decision)
    assert memo.nbytes == approx_bytes(key) + approx_bytes(decision) < approx_bytes((policy, key)) + approx_bytes(decision)


def test_shared_outputs_stop_at_their_byte_bound():
    shared = SharedOutputs(max_entries=256, max_mib=1)
    ask = Ask(kind="report")
    for i in range(64):  # 64 studies' reports of ~64 KiB: four times the bound
        ev = Evidence(tool="vlm", report=f"Study {i}. " + "The lungs are clear. " * 3000, meta={"model_id": "m"})
        shared.put(key_for(f"{i:016x}", "vlm", ask, ev), ev)
        assert shared.nbytes <= MIB
    assert len(shared) < 64
    assert shared.get(f"{63:016x}", "vlm", ask, None) is not None
    assert shared.get(f"{0:016x}", "vlm", ask, None) is None
