"""The reconciler's numbers: the Policy value, how strongly one call supports its status, and the
collapse of one source's calls into one vote (steps 2-3 of agents/reconciling/decide.py's policy).

Kept apart from decide() so the verification rule (agents/reconciling/settle.py) and the evaluation harness use the
very same strengths and thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from knowledge.evidence import FindingCall, Status


@dataclass(frozen=True)
class Policy:
    """Every number the reconciler uses. Frozen: a policy is a value you can log and compare."""

    # image-source weights (a dict is accepted and stored as sorted pairs: hashable, picklable)
    source_weights: tuple[tuple[str, float], ...] | Mapping[str, float] = (("classifier", 1.0), ("vlm", 1.0))
    default_weight: float = 0.8  # custom image tools
    prior_sources: frozenset[str] = frozenset({"retrieval"})
    # which sources' words count as statements and whose box a decision shows first: the graph sets them from
    # tool capabilities (agents/turn/nodes.py: report writers, then other image sources); defaults = the built-ins
    statement_sources: frozenset[str] = frozenset({"vlm"})  # an unscored positive from these is high-confidence
    box_preference: tuple[str, ...] = ("vlm", "classifier")
    # how replies name each source (agents/replying/phrases.py): the graph sets them from the tools' declared ``label``
    source_labels: tuple[tuple[str, str], ...] | Mapping[str, str] = (
        ("classifier", "the classifier"), ("retrieval", "retrieval"), ("vlm", "the VLM"))
    # classifier op-norm scores: 0.5 is the calibrated threshold
    classifier_margin: float = 0.1  # |s - 0.5| < margin -> uncertain (the classifier's own band)
    margin_high: float = 0.2  # s >= 0.5 + margin_high -> a high-confidence present call
    # text statements (VLM report, labelled), which carry no score
    text_present: float = 0.75
    text_absent: float = 0.7
    uncertain_strength: float = 0.5
    implicit_absent_strength: float = 0.6  # "no finding" read as absent for an unmentioned finding
    silent_absent_strength: float = 0.55  # a full report's silence on a finding another source calls present
    # a VLM's abnormality classification (task="classification": one call per label of its list): a listed
    # label is a MODERATE positive (RadVLM was trained with CheXpert's uncertain labels as positive, so a
    # listed label may be a hedge; never a high-confidence positive), an unlisted one an explicit absence
    classification_present: float = 0.6
    classification_absent: float = 0.7
    uncertain_penalty: float = 0.15  # confidence *= (1 - penalty) per uncertain image source
    uncertain_cap: float = 0.5  # max confidence of an 'uncertain' decision
    max_confidence: float = 0.99
    # retrieval prior
    prior_shift: float = 0.05
    prior_only_confidence: float = 0.2  # max confidence of a retrieval-only (uncertain) decision
    # review + verification
    review_below: float = 0.6  # caps a conflict's winning side; below it a one-sided call is worded 'low confidence'
    box_iou_min: float = 0.1  # VLM box vs classifier heatmap box overlap that counts as agreement
    resolved_confidence: float = 0.65
    unresolved_cap: float = 0.5
    overruled_confidence: float = 0.55  # absent after the VLM denies a moderate (not high-confidence) positive twice

    def __post_init__(self) -> None:
        pairs = self.source_weights.items() if isinstance(self.source_weights, Mapping) else self.source_weights
        object.__setattr__(self, "source_weights", tuple(sorted((str(k), float(v)) for k, v in pairs)))
        object.__setattr__(self, "prior_sources", frozenset(self.prior_sources))
        object.__setattr__(self, "statement_sources", frozenset(self.statement_sources))
        object.__setattr__(self, "box_preference", tuple(self.box_preference))
        labels = self.source_labels.items() if isinstance(self.source_labels, Mapping) else self.source_labels
        object.__setattr__(self, "source_labels", tuple(sorted((str(k), str(v)) for k, v in labels)))
        # lookups as dicts, built once (not fields: equality, hash and repr see only the tuples above)
        object.__setattr__(self, "_weights", dict(self.source_weights))
        object.__setattr__(self, "_labels", dict(self.source_labels))

    def __hash__(self) -> int:
        """The fields' hash, computed once: the decision memo and the audit line hash the policy per lookup."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash(tuple(getattr(self, f) for f in self.__dataclass_fields__))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the cached hash: string hashes differ between processes."""
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> Policy:
        """Policy from Settings (uses ``classifier_margin``; any ``reconciler_<field>`` setting overrides)."""
        if settings is None:
            from cxr_agent.settings import get_settings

            settings = get_settings()
        kw: dict[str, Any] = {}
        if hasattr(settings, "classifier_margin"):
            kw["classifier_margin"] = float(settings.classifier_margin)
        for name in cls.__dataclass_fields__:
            val = getattr(settings, f"reconciler_{name}", None)
            if val is not None:
                kw[name] = val
        kw.update(overrides)
        return cls(**kw)

    def weight(self, source: str) -> float:
        return self._weights.get(source, self.default_weight)  # type: ignore[attr-defined]

    @property
    def labels(self) -> dict[str, str]:
        """``source_labels`` as a dict (what agents/replying/phrases.py takes; do not mutate)."""
        return self._labels  # type: ignore[attr-defined]

    def is_image_source(self, source: str) -> bool:
        return source not in self.prior_sources


DEFAULT_SOURCE_LABELS: dict[str, str] = dict(Policy.__dataclass_fields__["source_labels"].default)
"""The built-in tools' labels: what wording uses when no policy's labels are given."""


# --------------------------------------------------------------------------------------------
# One call
# --------------------------------------------------------------------------------------------


def clip(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return max(lo, min(hi, x))


def strength(call: FindingCall, policy: Policy) -> float:
    """How strongly ``call`` supports its own status, in [0, 1], before the source weight."""
    if call.status is Status.uncertain:
        return policy.uncertain_strength
    s = call.score
    if s is not None and call.score_kind in (None, "op_norm", "probability") and 0.0 <= s <= 1.0:
        return clip(s if call.status is Status.present else 1.0 - s)
    if call.implied == "normal_study":
        return policy.implicit_absent_strength
    if call.implied == "report_silence":
        return policy.silent_absent_strength
    if call.task == "classification":
        return policy.classification_present if call.status is Status.present else policy.classification_absent
    return policy.text_present if call.status is Status.present else policy.text_absent


def is_high_confidence(call: FindingCall, policy: Policy) -> bool:
    """A present call we must never silently drop: op-norm score >= 0.5 + margin_high, or an
    explicit positive statement (quoted text, or no score from a ``statement_sources`` tool) - not a label in a
    classification list (``Policy.classification_present``)."""
    if call.status is not Status.present or not policy.is_image_source(call.source):
        return False
    if call.score is not None and call.score_kind in (None, "op_norm", "probability"):
        return call.score >= 0.5 + policy.margin_high
    if call.task == "classification":  # a listed label may be a hedge: a moderate positive only
        return False
    return bool(call.text) or call.source in policy.statement_sources


def one_per_source(calls: list[FindingCall], policy: Policy) -> dict[str, FindingCall]:
    """Collapse each source's calls on one finding into one: the strongest if they agree, else an
    uncertain call quoting both (a self-contradicting source is not a confident vote)."""
    by_src: dict[str, list[FindingCall]] = {}
    for c in calls:
        by_src.setdefault(c.source, []).append(c)
    out: dict[str, FindingCall] = {}
    for src, cs in by_src.items():
        statuses = {c.status for c in cs}
        if {Status.present, Status.absent} <= statuses:
            texts = "; ".join(t for t in (c.text for c in cs) if t)
            out[src] = cs[0].model_copy(update={"status": Status.uncertain, "text": texts or None, "score": None})
        elif len(statuses) == 1:
            out[src] = max(cs, key=lambda c: (strength(c, policy), c.box is not None))
        else:  # a definite status plus uncertain mentions: keep the definite, it is what was said
            out[src] = max((c for c in cs if c.status is not Status.uncertain), key=lambda c: strength(c, policy))
    return out
