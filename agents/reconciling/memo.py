"""Decisions already reached: one finding's calls under one policy always give the same Decision.

Why: every turn re-decides every finding of the study from its whole ledger, and a turn's new evidence
bears on few of them; the rest have exactly the calls they had, so their decisions are read back
instead of being weighed and worded again. Bounded (LRU), thread-safe (turns run concurrently).
A Decision read back is the same object: nothing may change one in place (the reconciler and the
re-ask rule only ever ``model_copy`` them).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from agents.reconciling.policy import Policy
from knowledge.bounded_memo import BoundedMemo
from knowledge.evidence import Decision, FindingCall


def call_key(c: FindingCall) -> tuple:
    """Every field of a call, as a hashable tuple: equal keys, equal calls."""
    box = None if c.box is None else (c.box.x1, c.box.y1, c.box.x2, c.box.y2, c.box.label)
    return (c.finding, c.status.value, c.score, c.score_kind, c.raw_score, c.source, box, c.text, c.span,
            c.implied, c.task)


class DecisionMemo(BoundedMemo[Decision]):
    """(policy, finding, its calls in order) -> the Decision ``decide`` reached; at most ``maxsize`` entries
    and ``Settings.memo_max_mib`` MiB kept."""

    @staticmethod
    def key(finding: str, calls: list[FindingCall], known: Mapping[int, tuple] | None = None) -> tuple[str, tuple]:
        """``known``: the keys of calls already keyed by the caller (by ``id`` of the call), not computed twice."""
        if known is None:
            return finding, tuple(call_key(c) for c in calls)
        return finding, tuple(known.get(id(c)) or call_key(c) for c in calls)

    def get(self, policy: Policy, key: Hashable) -> Decision | None:
        return self.lookup((policy, key))

    def put(self, policy: Policy, key: Hashable, decision: Decision) -> None:
        self.store((policy, key), decision)

    def entry_bytes(self, key: Hashable, value: Decision) -> int:
        """The calls and the decision; not the policy, one object shared by every entry under it."""
        return self.sizeof(key[1]) + self.sizeof(value)  # type: ignore[index]


DECISIONS = DecisionMemo()
