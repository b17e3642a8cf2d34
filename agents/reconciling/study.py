"""Reconcile a study's whole evidence ledger into its decisions (pure: no I/O, no models).

Why: a turn that asks about one finding must not re-decide the others from its own slice of
evidence. Every decision is ``decide()`` over the calls of every recorded output on the study;
the same ledger always gives the same decisions, so a decision changes only when new evidence
bears on its finding.

Two rules on top of ``decide``:

- **A source that contradicts itself across outputs** (its report says present, a later direct
  answer says absent) is a flagged conflict (status uncertain, ``needs_review``) whose vote reason
  lists both answers, quoted; it is never collapsed into a quiet 'uncertain'.
- **A re-ask is a settlement, never a vote**: its answer is applied by ``settle.resolve`` to the
  conflict it was asked about, identified by ``signature`` (the image calls that made the
  conflict). New evidence on that finding makes a new conflict, which needs its own re-ask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from agents.reconciling.decide import conflicts, decide
from agents.reconciling.memo import call_key as _call_key
from agents.reconciling.policy import Policy, one_per_source
from agents.reconciling.settle import resolve
from agents.replying import phrases as wording
from knowledge.evidence import Box, Decision, Evidence, FindingCall, Reason, Status

QUOTE_CHARS = 160  # a direct answer quoted beside its call, when the call carries no words of its own

BoxFor = Callable[[str, str], Box | None]  # (finding, the re-asked tool) -> another image source's box


def gather(entries: Sequence[Evidence],
           keys: dict[int, tuple] | None = None) -> tuple[list[FindingCall], dict[tuple, set[int]]]:
    """Every distinct call of the successful outputs, and for each call the outputs that made it.
    ``keys``, when given, receives each returned call's key (by ``id`` of the call)."""
    calls: list[FindingCall] = []
    origin: dict[tuple, set[int]] = {}
    for i, e in enumerate(entries):
        if not e.ok:
            continue
        for c in e.calls:
            if c.task is None and e.answer and not c.text and not e.report:
                c = c.model_copy(update={"text": e.answer.strip()[:QUOTE_CHARS]})  # quote the direct answer
            key = _call_key(c)
            if key not in origin:
                origin[key] = set()
                calls.append(c)
                if keys is not None:
                    keys[id(c)] = key
            origin[key].add(i)
    return calls, origin


def report_sources(entries: Sequence[Evidence], policy: Policy) -> frozenset[str]:
    """Writers whose complete report is on record: their silence on a finding counts as weak absence.
    A report cut at the token limit (``Evidence.truncated``) says nothing by its silence."""
    return frozenset(e.tool for e in entries if e.ok and e.report and not e.truncated
                     and (e.meta.get("ask") or {}).get("kind", "report") == "report"
                     and e.tool in policy.statement_sources and policy.is_image_source(e.tool))


def signature(decision: Decision, policy: Policy) -> str:
    """Which conflict this is: a digest of the image calls on the finding (re-asks excluded)."""
    keys = sorted(repr(_call_key(c)) for c in decision.calls
                  if policy.is_image_source(c.source) and c.task != "verification")
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def _self_contradictions(calls: list[FindingCall], origin: dict[tuple, set[int]], policy: Policy,
                         keys: dict[int, tuple] | None = None) -> dict[str, tuple[list[FindingCall], list[FindingCall]]]:
    """Per finding: a source's explicit present and absent calls made in different outputs."""
    known = keys or {}

    def key(c: FindingCall) -> tuple:
        return known.get(id(c)) or _call_key(c)

    out: dict[str, tuple[list[FindingCall], list[FindingCall]]] = {}
    by: dict[tuple[str, str], list[FindingCall]] = {}
    for c in calls:
        if c.implied is None and c.task != "verification" and policy.is_image_source(c.source):
            by.setdefault((c.finding, c.source), []).append(c)
    for (finding, _src), cs in sorted(by.items()):
        pres = [c for c in cs if c.status is Status.present]
        absn = [c for c in cs if c.status is Status.absent]
        split = [(p, a) for p in pres for a in absn if not origin[key(p)] & origin[key(a)]]
        if split:
            have_p, have_a = out.get(finding, ([], []))
            out[finding] = ([*have_p, *{key(p): p for p, _ in split}.values()],
                            [*have_a, *{key(a): a for _, a in split}.values()])
    return out


def _flag_contradiction(d: Decision, present: list[FindingCall], absent: list[FindingCall],
                        policy: Policy) -> Decision:
    said = {c.source for c in present} | {c.source for c in absent}
    others = one_per_source([c for c in d.calls if policy.is_image_source(c.source) and c.source not in said
                             and c.task != "verification"], policy).values()
    vote = Reason(rule="conflict", status=Status.uncertain,
                  present=[*present, *(c for c in others if c.status is Status.present)],
                  absent=[*absent, *(c for c in others if c.status is Status.absent)],
                  uncertain=[c for c in others if c.status is Status.uncertain])
    reasons = [vote, *(r for r in d.reasons if r.rule in ("prior_shift", "prior_unsettled"))]
    return d.model_copy(update={
        "status": Status.uncertain, "conflict": True, "needs_review": True,
        "confidence": round(min(d.confidence, policy.uncertain_cap), 4),
        "agreeing": sorted({c.source for c in present}), "disagreeing": sorted({c.source for c in absent}),
        "reasons": reasons, "rationale": wording.rationale(d.finding, reasons, policy.labels),
    })


def contradiction(decision: Decision) -> Reason | None:
    """The vote reason of a source contradicting itself (one source on both sides), if that is this conflict."""
    for r in decision.reasons:
        if r.rule == "conflict" and {c.source for c in r.present} & {c.source for c in r.absent}:
            return r
    return None


def settle(decision: Decision, answer: Evidence, *, classifier_box: Box | None, policy: Policy) -> Decision:
    """``resolve`` the conflict with the re-ask's answer; a self-contradiction the answer leaves
    unsettled keeps both of the source's quoted answers in its rationale."""
    out = resolve(decision, answer, classifier_box=classifier_box, policy=policy)
    vote = contradiction(decision)
    if vote is not None and out.needs_review:
        out = out.model_copy(update={"rationale": wording.rationale(decision.finding, [vote], policy.labels)
                                     + " " + out.rationale.split(": ", 1)[-1]})
    return out


def reconcile_study(entries: Sequence[Evidence], reasks: Sequence[tuple[Evidence, str | None]],
                    policy: Policy, box_for: BoxFor | None = None, *, order: Sequence[str] = ()) -> list[Decision]:
    """The study's decisions from every recorded output (``entries``) and the re-asks on record
    (``(answer, signature of the conflict it was asked about)``, oldest first). ``order``: the tools in
    registry order; outputs are weighed in that order, so the decisions do not depend on which tool of a
    turn finished first or which turn recorded it."""
    rank = {name: i for i, name in enumerate(order)}
    entries = sorted(entries, key=lambda e: rank.get(e.tool, len(rank)))  # stable: a tool's outputs keep their order
    keys: dict[int, tuple] = {}
    calls, origin = gather(entries, keys)
    decisions = decide(calls, policy, report_sources=report_sources(entries, policy), keys=keys)
    split = _self_contradictions(calls, origin, policy, keys)
    out: list[Decision] = []
    for d in decisions:
        if d.finding in split:
            d = _flag_contradiction(d, *split[d.finding], policy)
        if conflicts([d], policy):
            sig = signature(d, policy)
            answer = next((ev for ev, s in reversed(reasks) if s == sig
                           and ev.meta.get("verification") == d.finding), None)
            if answer is not None:
                d = settle(d, answer, classifier_box=box_for(d.finding, answer.tool) if box_for else None,
                           policy=policy)
        out.append(d)
    return out


def unasked(decisions: Sequence[Decision], policy: Policy) -> list[Decision]:
    """Conflicts no re-ask on record has been applied to (what the verify node must still ask)."""
    return [d for d in conflicts(list(decisions), policy) if not any(r.rule.startswith("reask_") for r in d.reasons)]

