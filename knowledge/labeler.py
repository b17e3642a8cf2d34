"""Report text -> per-finding calls (present / absent / uncertain), in the CheXpert-labeler / NegEx tradition.

Plain precompiled regular expressions, no NLP dependency: thousands of reports per second, deterministic.

How a report is read
1. Mentions: every finding has phrase patterns (labeler_mentions in knowledge/lexicon.toml). Some phrases are hedged by
   themselves (borderline heart size, vascular congestion -> uncertain), and some sentences state normality
   ("heart size is normal", "normal cardiomediastinal silhouette", "lungs are clear") -> absent.
2. Context, per mention, inside its clause (a sentence cut at "but", "however", "although", ";", ...):
   pseudo-negations are masked first ("no change in", "not changed", "no increase in", "without change");
   then the nearest cue wins: "cannot exclude" / "not excluded" / "cannot be ruled out" -> uncertain;
   a negation cue before the mention ("no", "without", "free of", "negative for", "no evidence of",
   "resolution of"; one cue negates a whole list: "no effusion, consolidation, or pneumothorax") -> absent;
   a hedge before it ("possible", "may", "suspicious for", "suggestive of", "questionable") -> uncertain,
   except a "suggest"-type hedge inside an already negated clause ("no consolidation to suggest pneumonia"
   -> absent); a negation after it ("has resolved", "is no longer seen", "is not identified") -> absent;
   "X or Y" / "X versus Y" in an affirmative clause -> uncertain (as CheXpert).
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
- vascular / pulmonary congestion, CHF -> edema, uncertain (as CheXpert); "edema" itself -> present.
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
from bisect import bisect_right
from dataclasses import dataclass

from knowledge.evidence import FindingCall, Status
from knowledge.lexicon import lexicon
from knowledge.vocabulary import FINDINGS

LABELER_VERSION = "1.0"

# ------------------------------------------------------------------------------------------ context cues
_PSEUDO = re.compile(
    r"\b(?:no|without) (?:significant |appreciable |substantial |interval |definite )?(?:change|increase|"
    r"decrease|worsening|improvement)s?\b(?: (?:in|of))?"
    r"|\bnot (?:significantly )?(?:changed|increased|decreased|improved)\b"
    r"|\bno longer\b(?= (?:enlarged|widened))"
    r"|\bnot only\b|\bno doubt\b|\bgram negative\b|\bno further\b",
)
_UNC_STRONG = re.compile(
    r"\b(?:cannot|can ?not|can't|could not|may not|not) (?:be )?(?:completely |entirely |definitely |totally )?"
    r"(?:exclude[ds]?|ruled? out)\b"
    r"|\bnot (?:totally |completely |entirely )?excluded\b|\bno evidence to rule out\b"
)
_NEG_PRE = re.compile(
    r"\b(?:no|not|without|negative for|free of|clear of|absence of|absent|resolution of|resolved|"
    r"removal of|removed|nor|neither|none|(?:interval )?clearing of|rather than|instead of)\b"
)
_MODAL = re.compile(r"may|might|could|versus|vs\.?|\?|may represent|could represent")
_UNC_PRE = re.compile(
    r"\b(?:possible|possibly|probable|questionable|questionably|question of|suspect(?:ed)?|suspicious(?: for)?|"
    r"suspicion(?: for| of)?|concern(?:ing)? (?:for|of)|worrisome(?: for)?|may|might|could|perhaps|maybe|"
    r"suggest(?:s|ing|ive of|ion of)?|to suggest|differential(?: diagnosis)?|versus|vs\.?|equivocal|indeterminate|"
    r"uncertain|unclear|presumed|presumably|borderline|less likely|unlikely|cannot rule out|"
    r"rule out|r/o|evaluat(?:e|ion) for|assess for|may represent|could represent|consider(?:ed)?)\b|\?"
)
_NEG_POST = re.compile(
    r"^(?:[\w ,'/-]{0,30}?)\b(?:(?:is|are|was|were|has|have|had|been) )*(?:(?:not|no longer) (?:\w+ )?"
    r"(?:seen|identified|visualized|visible|demonstrated|appreciated|present|evident|apparent|noted|detected|"
    r"shown|observed|identifiable|evidenced)|resolved|cleared|absent|gone|been removed|removed|ruled out|"
    r"excluded|negative|resolving? completely)\b"
)
_UNC_POST = re.compile(
    r"^(?:[\w ,'/-]{0,30}?)\b(?:(?:is|are|was|were) )?(?:possible|possibly|questionable|suspected|"
    r"not (?:clearly|well) (?:seen|visualized|evaluated)|poorly (?:seen|visualized|evaluated)|"
    r"(?:cannot|can ?not|can't|not) (?:be )?(?:excluded|ruled out)|not excluded|"
    r"(?:may|might|could) (?:be|also be) (?:present|seen|noted|developing))\b|^\s*\?"
)
_STRONG_POST = re.compile(r"^[\w ,'/-]{0,30}?(?:" + _UNC_STRONG.pattern + ")")
_OR_AFTER = re.compile(r"^\s*,?\s*(?:or|versus|vs\.?|and/or)\b")
_OR_BEFORE = re.compile(r"\b(?:or|versus|vs\.?|and/or)\s+(?:\w+\s+){0,3}$")
_TERMINATOR = re.compile(
    r"[;:]|\b(?:but|however|although|though|except|aside from|apart from|otherwise|whereas|while|yet|"
    r"which|with the exception of|there is|there are|with|given)\b|,\s*(?=(?:the|and the|and there)\b)"
    r"|\band (?=(?:the|there|a|an)\b)"
)
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


def _clauses(masked: str, s0: int, s1: int) -> list[tuple[int, int]]:
    out, start = [], s0
    for m in _TERMINATOR.finditer(masked, s0, s1):
        if m.start() > start:
            out.append((start, m.start()))
        start = m.start() if m.group(0) not in (";", ":") and not m.group(0).startswith(",") else m.end()
        # keep the terminator word at the head of the next clause so its own cues stay with it
    out.append((start, s1))
    return [c for c in out if c[1] > c[0]]


def _decide(masked: str, clause: tuple[int, int], start: int, end: int, kind: str) -> tuple[Status, str]:
    c0, c1 = clause
    if kind == "normal":
        return Status.absent, "normal statement"
    before = masked[c0:start]
    after = masked[end:c1]
    inside = masked[start:end]
    if _STRONG_POST.match(after):
        return Status.uncertain, "not excluded"
    # Nearest preceding cue wins.
    cues: list[tuple[int, str, str]] = []
    for m in _UNC_STRONG.finditer(before):
        cues.append((m.end(), "unc_strong", m.group(0)))
    strong_spans = [m.span() for m in _UNC_STRONG.finditer(before)]
    for m in _NEG_PRE.finditer(before):
        if not any(s <= m.start() and m.end() <= e for s, e in strong_spans):
            cues.append((m.end(), "neg", m.group(0)))
    for m in _UNC_PRE.finditer(before):
        cues.append((m.end(), "unc", m.group(0)))
    if cues:
        cues.sort(key=lambda c: (c[0], {"unc_strong": 2, "neg": 1, "unc": 0}[c[1]]))
        pos, ckind, word = cues[-1]
        if ckind == "unc_strong":
            return Status.uncertain, word
        if ckind == "neg":
            return Status.absent, word
        if any(k == "neg" for _, k, _ in cues) and not _MODAL.fullmatch(word):
            # "no consolidation, suspicious opacity, or effusion", "no consolidation to suggest pneumonia":
            # an adjective hedge inside a negated list stays negated; only a modal re-opens the clause.
            return Status.absent, "negated clause"
        return Status.uncertain, word
    if kind != "normal" and re.search(r"\b(?:not|no)\b", inside):
        return Status.absent, "negated in phrase"
    m = _NEG_POST.match(after)
    if m:
        return Status.absent, m.group(0).strip()
    m = _UNC_POST.match(after)
    if m:
        return Status.uncertain, m.group(0).strip()
    if _OR_BEFORE.search(before) or _OR_AFTER.match(after):
        return Status.uncertain, "or"
    if kind == "hedged":
        return Status.uncertain, "hedged phrase"
    return Status.present, "affirmed"


def find_mentions(text: str, *, prefilter: bool = True) -> list[Mention]:
    """Every finding mention in `text`, in order of position, each with its contextual status."""
    if not text:
        return []
    lower = text.lower()
    sentences = [m.span() for m in _SENTENCE.finditer(lower)]
    if not sentences:
        return []
    starts = [s0 for s0, _ in sentences]
    excluded = [(m.start(), m.end()) for m in _EXCLUDE.finditer(lower)]
    by_sentence: dict[int, list[tuple[int, int, _Rule]]] = {}
    for rule in _RULES:
        if prefilter and not any(k in lower for k in rule.keywords):
            continue
        for m in rule.regex.finditer(lower):
            a, b = m.span()
            if b <= a or (excluded and any(a < e and b > s for s, e in excluded)):
                continue
            i = bisect_right(starts, a) - 1
            if i < 0 or b > sentences[i][1]:
                continue
            by_sentence.setdefault(i, []).append((a, b, rule))
    if not by_sentence:
        return []
    masked = _PSEUDO.sub(lambda m: " " * len(m.group(0)), lower)
    out: list[Mention] = []
    for i in sorted(by_sentence):
        s0, s1 = sentences[i]
        clauses = _clauses(masked, s0, s1)
        for a, b, rule in by_sentence[i]:
            clause = next((c for c in clauses if c[0] <= a < c[1]), (s0, s1))
            clause = (clause[0], max(clause[1], min(b, s1)))
            status, cue = _decide(masked, clause, a, b, rule.kind)
            for finding in rule.findings:
                out.append(Mention(finding, status, a, b, (s0, s1), cue))
    out.sort(key=lambda m: (m.start, m.end, m.finding))
    return out


def label_report(text: str, *, source: str = "report", prefilter: bool = True) -> list[FindingCall]:
    """One FindingCall per finding the text mentions, plus `no_finding`; status present/absent/uncertain.

    `text` of each call is the mention as written and `span` its offsets: text == report[span[0]:span[1]].
    """
    best: dict[str, Mention] = {}
    for m in find_mentions(text or "", prefilter=prefilter):
        cur = best.get(m.finding)
        if cur is None or _RANK[m.status] > _RANK[cur.status]:
            best[m.finding] = m
    # model_construct: every field here is produced by this module from known-valid values (ids from
    # FINDINGS, Status members), so pydantic's validation would only cost time (~half the labeler's).
    calls = [
        FindingCall.model_construct(finding=f, status=m.status, score=None, source=source,
                                    text=text[m.start : m.end], span=(m.start, m.end))
        for f in FINDINGS
        if f != "no_finding" and (m := best.get(f)) is not None
    ]
    anything = any(c.status in (Status.present, Status.uncertain) for c in calls)
    calls.insert(0, FindingCall.model_construct(finding="no_finding", score=None, source=source,
                                                status=Status.absent if anything else Status.present))
    return calls


def present_findings(text: str) -> list[str]:
    """Ids of the findings `text` states as present (no_finding when none), in vocabulary order."""
    return [c.finding for c in label_report(text) if c.status is Status.present]


def label_statuses(text: str) -> dict[str, Status]:
    """{finding: status} for every finding the text mentions (plus no_finding)."""
    return {c.finding: c.status for c in label_report(text)}
