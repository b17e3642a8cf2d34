"""Report text -> per-finding calls (present / absent / uncertain), in the CheXpert-labeler / NegEx tradition.

Mentions are the lexicon's precompiled regular expressions; their context (negation, uncertainty,
hypothetical, history) is medspaCy's ConText over spaCy's blank English tokenizer (knowledge/context_cues.py:
the algorithm is maintained upstream, the radiology cue list is ours). ~1,400 reports/s on one core.
Each sentence is labelled on its own (ConText's scope never leaves it), so a sentence seen before comes
from a bounded memo (`SENTENCE_MEMO`) and a report turn labels only its new sentences; a sentence without a
negation, uncertainty, hypothetical or history cue (about 60% of IU report sentences) needs no ConText at all.

How a report is read
1. Mentions: every finding has phrase patterns (labeler_mentions in knowledge/lexicon.toml). Some phrases are hedged by
   themselves (borderline heart size, cephalization -> uncertain), and some sentences state normality
   ("heart size is normal", "normal cardiomediastinal silhouette", "lungs are clear") -> absent.
2. Context, per mention, from ConText's modifiers inside the mention's sentence: a cue's scope runs in its
   direction to the sentence end, a terminating word ("but", "however", "there is", ";") or the next cue
   of the same category; an uncertainty cue ends a negation's scope ("No pneumothorax, possible small
   effusion" -> effusion uncertain); pseudo-cues ("no change in", "not changed", "to suggest") are no cue.
   The nearest modifier wins: negation -> absent ("no", "without", "free of", "has resolved", "is not
   seen"; one "no" negates a list: "no effusion, consolidation, or pneumothorax"), possible / hypothetical
   / history -> uncertain ("possible", "may", "cannot exclude", "versus", "and/or", "rule out", "history
   of"); an adjective hedge ("suspicious", "borderline") -> uncertain but never lifts a negation.
   No modifier: "not"/"no" inside the mention itself ("heart is not enlarged") -> absent; a self-hedged
   phrase -> uncertain; else present.
3. One call per finding: a present mention anywhere wins, else uncertain, else absent (CheXpert's
   aggregation). `no_finding` is present when nothing is present or uncertain, absent otherwise.

Decisions (and why)
- "likely X" / "consistent with X" -> present (CheXpert treats neither as uncertain); "less likely",
  "unlikely" -> uncertain (we never turn a hedge into certainty).
- "no new X" -> absent (CheXpert says uncertain): a generated report describes one image, and persisting
  findings are stated elsewhere ("stable effusion"), which wins the merge as present.
- granuloma (incl. calcified) -> nodule: a granuloma is a (benign) nodule and image classifiers call it one;
  the call's text keeps the words "calcified granuloma" for the reader. "granulomatous disease" alone -> none.
- scarring / cicatrix -> fibrosis (focal fibrosis); pleural scar / plaque -> pleural_other.
- COPD / emphysematous -> emphysema; hyperinflation alone -> no call (a sign, not the finding).
- "X or Y" in an affirmative clause -> both present (CheXpert's uncertainty patterns list "and/or" and
  "versus", not a plain "or"; "may represent X or Y" is uncertain through "may").
- vascular / pulmonary congestion, CHF: see the lexicon (CheXpert lists them as plain edema mentions).
- "lungs are clear" -> absent lung_opacity, consolidation and pneumonia; "normal cardiomediastinal
  silhouette" -> absent cardiomegaly and enlarged_cardiomediastinum; "heart size normal" -> absent cardiomegaly.
- borderline / upper-normal heart size, "prominent" cardiac silhouette -> cardiomegaly uncertain.
- costophrenic angle blunting -> pleural_effusion uncertain (effusion or pleural thickening).
- infiltrate -> infiltration (not lung_opacity: the label sets keep them apart; see vocabulary.PARENTS).
- "enlarged cardiomediastinal silhouette" -> enlarged_cardiomediastinum present (CheXpert) and cardiomegaly
  uncertain (it usually means a large heart; MeSH indexes it as 'Cardiac Shadow/enlarged').
- mass = "mass", "mass-like opacity", "tumor"; diagnoses (carcinoma, neoplasm, malignancy, metastases) and
  "lesion" -> lung_lesion, the CheXpert parent of nodule and mass. No parent propagation here (see PARENTS).
- a bare "density" is not a lung opacity (bones, soft tissue, devices cast densities); a located or
  qualified one is ("left base density", "patchy densities", "nodular density").
- surgical clips and sternotomy wires are not support devices; lines, tubes, catheters, ports, pacemakers
  and leads, stimulators, valves, stents, orthopaedic hardware are (CheXpert's list). Anonymised device words
  ("right chest XXXX with tip in the SVC") are recognised from the tip-position context.
- pleural_thickening (incl. apical cap, fissural thickening) is kept apart from pleural_other (plaques,
  calcification, fibrothorax), unlike CheXpert which folds thickening into "Pleural Other".

Measured against the IU X-ray MeSH indexing in bench/labeler.py (macro-F1 and the disagreements there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from knowledge.bounded_memo import BoundedMemo
from knowledge.context_cues import CUES, HEDGE, HIST, HYPO, NEG, POSS, SPAN_GROUP, context
from knowledge.evidence import CallTask, FindingCall, Status
from knowledge.lexicon import lexicon
from knowledge.vocabulary import FINDINGS

LABELER_VERSION = "2.0"

# ------------------------------------------------------------------------------------------ sentences
_SENTENCE = re.compile(r"[^\s.!?](?:[^.!?\n]|[.!?](?=[^\s]))*[.!?]*")


@dataclass(frozen=True)
class _Rule:
    findings: tuple[str, ...]
    kind: str  # "mention" | "hedged" | "normal"
    regex: re.Pattern[str]
    keywords: tuple[str, ...]


def _compile_rules() -> list[_Rule]:
    """The lexicon's patterns as rules: mentions, then self-hedged phrases, then normal statements.

    Speed: a rule's regex only runs when one of its keywords occurs in the (lower-case) report, so every
    pattern of a finding must contain one of its labeler_keywords; tests/knowledge/test_labeler.py checks
    on the whole IU corpus that the prefilter changes no output."""
    lex = lexicon()
    rules: list[_Rule] = []
    for kind in ("mention", "hedged"):
        for finding, e in lex.findings.items():
            patterns = e.labeler_mentions if kind == "mention" else e.labeler_hedged
            if not patterns:
                continue
            alternation = "|".join(f"(?:{p})" for p in sorted(patterns, key=len, reverse=True))
            rules.append(_Rule((finding,), kind, re.compile(rf"\b(?:{alternation})\b"), e.labeler_keywords))
    for n in lex.normal_statements:
        rules.append(_Rule(n.findings, "normal", re.compile(rf"\b(?:{n.pattern})"), n.keywords))
    return rules


_RULES = _compile_rules()
_KEYWORDS: dict[str, tuple[int, ...]] = {}  # keyword -> the rules (by index) it lets run
for _i, _rule in enumerate(_RULES):
    for _k in _rule.keywords:
        _KEYWORDS[_k] = (*_KEYWORDS.get(_k, ()), _i)
_EXCLUDE = re.compile("|".join(lexicon().not_mentions))
_RANK = {Status.present: 3, Status.uncertain: 2, Status.absent: 1}


@dataclass(frozen=True)
class Mention:
    """One finding mention with the status its context gives it; `cue` names the rule that decided."""

    finding: str
    status: Status
    start: int
    end: int
    sentence: tuple[int, int]
    cue: str


_STATUS = {NEG: Status.absent, POSS: Status.uncertain, HEDGE: Status.uncertain, HYPO: Status.uncertain,
           HIST: Status.uncertain}
_IN_PHRASE_NEG = re.compile(r"\b(?:not|no)\b")


def _status_cues() -> re.Pattern[str]:
    """Where a sentence may hold a cue that changes a mention's status: every negation, uncertainty,
    hypothetical and history literal of CUES as lower-case text, its words apart by any whitespace.

    A superset of what ConText matches (tokens are runs of the text, so a matched cue's literal is in the
    text): no left boundary (spaCy reads "cannot" as "can not"), a right one only after a letter or digit.
    A sentence without one gets no modifier that `_decide` weighs, so it is decided without spaCy."""
    literals = sorted({lit for lits, category, *_ in CUES if category in _STATUS for lit in lits}, key=len,
                      reverse=True)
    alternatives = [r"\s+".join(map(re.escape, lit.split())) + (r"(?![a-z0-9])" if lit[-1].isalnum() else "")
                    for lit in literals]
    return re.compile("|".join(alternatives))


_STATUS_CUE = _status_cues()


def _decide(target: Any, kind: str, inside: str) -> tuple[Status, str]:
    """A mention's status from its ConText modifiers (the nearest one wins; a hedge never lifts a negation).
    ``target`` None: a mention in a sentence without a status cue (no modifiers)."""
    if kind == "normal":
        return Status.absent, "normal statement"
    mods = [m for m in target._.modifiers if m.category in _STATUS] if target is not None else []
    if mods:
        def distance(m: Any) -> int:
            s, e = m.modifier_span
            return target.start - e if e <= target.start else s - target.end

        cats = {m.category for m in mods}
        nearest = min(mods, key=lambda m: (distance(m), m.category != NEG))
        cue = target.doc[nearest.modifier_span[0] : nearest.modifier_span[1]].text
        if nearest.category == HEDGE and NEG in cats:
            return Status.absent, "negated clause"
        return _STATUS[nearest.category], cue
    if _IN_PHRASE_NEG.search(inside):
        return Status.absent, "negated in phrase"
    if kind == "hedged":
        return Status.uncertain, "hedged phrase"
    return Status.present, "affirmed"


class _Local(NamedTuple):
    """A mention inside one sentence: offsets from the sentence's start."""

    finding: str
    status: Status
    start: int
    end: int
    cue: str


class SentenceMemo(BoundedMemo[tuple[_Local, ...]]):
    """The mentions of each lower-case sentence, keyed by its text and the labeler version; bounded (LRU).

    Why: a sentence's mentions depend on that sentence alone (ConText's scope never leaves it), and
    reports repeat sentences ("No pneumothorax.", "The lungs are clear.") constantly, so a report turn
    labels only the sentences it has not seen. Thread-safe: tools label reports on worker threads."""

    def get(self, sentence: str) -> tuple[_Local, ...] | None:
        return self.lookup((LABELER_VERSION, sentence))

    def put(self, sentence: str, mentions: tuple[_Local, ...]) -> None:
        self.store((LABELER_VERSION, sentence), mentions)


SENTENCE_MEMO = SentenceMemo()


def _label_sentences(sentences: list[str], *, prefilter: bool = True) -> list[tuple[_Local, ...]]:
    """The mentions of each (lower-case) sentence as if it were a report of its own, in order of position."""
    found: list[list[tuple[int, int, _Rule]]] = []
    for sentence in sentences:
        here: list[tuple[int, int, _Rule]] = []
        excluded = [(m.start(), m.end()) for m in _EXCLUDE.finditer(sentence)]
        if prefilter:  # the rules one of whose keywords occurs in the sentence, in rule order
            hits = sorted({i for k, rules in _KEYWORDS.items() if k in sentence for i in rules})
            rules = [_RULES[i] for i in hits]
        else:
            rules = _RULES
        for rule in rules:
            for m in rule.regex.finditer(sentence):
                a, b = m.span()
                if b <= a or (excluded and any(a < e and b > s for s, e in excluded)):
                    continue
                here.append((a, b, rule))
        found.append(here)
    out: list[list[_Local]] = [[] for _ in sentences]
    # ConText only reads the sentences that hold a mention needing it: a sentence whose mentions are all
    # normal statements ("heart size is normal") is decided without it. The sentences that need it are
    # read as one doc of their own (joined by a space): sentences are whitespace-delimited, so their
    # tokens are the same, and ConText's scope never leaves a sentence. Targets keep every mention of
    # those sentences (a normal statement as a target still prunes an overlapping cue).
    # With the prefilter, a sentence without a status cue (`_STATUS_CUE`) is decided without it too: none
    # of its mentions can get a modifier that changes its status.
    need = [i for i, here in enumerate(found) if any(rule.kind != "normal" for _, _, rule in here)
            and (not prefilter or _STATUS_CUE.search(sentences[i]))]
    if need:
        nlp, ctx = context()
        shift: dict[int, int] = {}  # sentence index -> its offset in the ConText doc
        pos = 0
        for i in need:
            shift[i] = pos
            pos += len(sentences[i]) + 1
        doc = nlp.make_doc(" ".join(sentences[i] for i in need))
        starts_at = set(shift.values())
        for tok in doc:
            tok.is_sent_start = tok.idx in starts_at
        spans, kept = [], []
        for i in need:
            for a, b, rule in found[i]:
                span = doc.char_span(a + shift[i], b + shift[i], label=rule.kind, alignment_mode="expand")
                if span is not None and len(span):
                    spans.append(span)
                    kept.append((a, b, i, rule))
        doc.spans[SPAN_GROUP] = spans
        ctx(doc)
        for span, (a, b, i, rule) in zip(doc.spans[SPAN_GROUP], kept, strict=True):
            status, cue = _decide(span, rule.kind, sentences[i][a:b])
            out[i] += [_Local(finding, status, a, b, cue) for finding in rule.findings]
    needed = set(need)
    for i, here in enumerate(found):
        if i in needed:
            continue
        for a, b, rule in here:  # normal statements, or no status cue: no context can change them
            if sentences[i][a:b].strip():
                status, cue = _decide(None, rule.kind, sentences[i][a:b])
                out[i] += [_Local(finding, status, a, b, cue) for finding in rule.findings]
    return [tuple(sorted(ms, key=lambda m: (m.start, m.end, m.finding))) for ms in out]


def find_mentions(text: str, *, prefilter: bool = True, memo: bool = True) -> list[Mention]:
    """Every finding mention in `text`, in order of position, each with its contextual status.

    Each sentence is labelled on its own; with `memo`, sentences already seen come from `SENTENCE_MEMO`
    (the same mentions: `memo=False` labels every sentence afresh, as `prefilter=False` does)."""
    if not text:
        return []
    lower = text.lower()
    spans = [m.span() for m in _SENTENCE.finditer(lower)]
    texts = [lower[s0:e0] for s0, e0 in spans]
    use_memo = memo and prefilter
    local: list[tuple[_Local, ...] | None] = [SENTENCE_MEMO.get(t) for t in texts] if use_memo else [None] * len(texts)
    missing = [i for i, ms in enumerate(local) if ms is None]
    if missing:
        for i, ms in zip(missing, _label_sentences([texts[i] for i in missing], prefilter=prefilter), strict=True):
            local[i] = ms
            if use_memo:
                SENTENCE_MEMO.put(texts[i], ms)
    out = [Mention(m.finding, m.status, m.start + s0, m.end + s0, (s0, e0), m.cue)
           for (s0, e0), ms in zip(spans, local, strict=True) for m in ms or ()]
    out.sort(key=lambda m: (m.start, m.end, m.finding))
    return out


_UNSET_CALL: dict[str, Any] = dict.fromkeys(FindingCall.model_fields)  # every default of FindingCall is None


def _call(values: dict[str, Any]) -> FindingCall:
    """A FindingCall with exactly ``values`` set (the rest at their None defaults), built without validation:
    the fields pydantic's own construction writes, and nothing else (a fifth of ``model_copy``'s cost)."""
    call = object.__new__(FindingCall)
    fields = {**_UNSET_CALL, **values}
    object.__setattr__(call, "__dict__", fields)
    object.__setattr__(call, "__pydantic_fields_set__", set(values))
    object.__setattr__(call, "__pydantic_extra__", None)
    object.__setattr__(call, "__pydantic_private__", None)
    return call


def label_report(text: str, *, source: str = "report", prefilter: bool = True,
                 task: CallTask | None = None) -> list[FindingCall]:
    """One FindingCall per finding the text mentions, plus `no_finding`; status present/absent/uncertain.

    `text` of each call is the mention as written and `span` its offsets: text == report[span[0]:span[1]].
    `task`, when given, is set on every call (e.g. "report": which skill of the source made them).
    """
    best: dict[str, Mention] = {}
    for m in find_mentions(text or "", prefilter=prefilter):
        cur = best.get(m.finding)
        if cur is None or _RANK[m.status] > _RANK[cur.status]:
            best[m.finding] = m
    # no validation: every field here is produced by this module from known-valid values (ids from
    # FINDINGS, Status members), so pydantic's validation would only cost time (~half the labeler's).
    extra = {} if task is None else {"task": task}
    calls = [
        _call({"finding": f, "status": m.status, "score": None, "source": source,
               "text": text[m.start : m.end], "span": (m.start, m.end), **extra})
        for f in FINDINGS
        if f != "no_finding" and (m := best.get(f)) is not None
    ]
    anything = any(c.status in (Status.present, Status.uncertain) for c in calls)
    calls.insert(0, _call({"finding": "no_finding", "score": None, "source": source,
                           "status": Status.absent if anything else Status.present, **extra}))
    return calls


def present_findings(text: str) -> list[str]:
    """Ids of the findings `text` states as present (no_finding when none), in vocabulary order."""
    return [c.finding for c in label_report(text) if c.status is Status.present]


def label_statuses(text: str) -> dict[str, Status]:
    """{finding: status} for every finding the text mentions (plus no_finding)."""
    return {c.finding: c.status for c in label_report(text)}
