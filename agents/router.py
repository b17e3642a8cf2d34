"""Route one user turn to an intent, the tools it needs and the finding it names.

Offline, fast and deterministic: ordered regular-expression rules over the lower-cased turn,
plus finding extraction that combines router-specific colloquial phrases ("big heart", "ETT tip",
"r/o PNA") with the shared vocabulary's ``normalize()``. An optional LLM router
(``route_with_llm``) can sit in front and always falls back to these rules.

Rule order (first match wins) is the whole policy, so it is written down once, in ``_classify``:
explain > similar_cases > locate > strong report cue > finding question > weak report cue > chat.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from knowledge.lexicon import lexicon
from knowledge.vocabulary import display_name, normalize

Intent = Literal["report", "locate", "finding_question", "similar_cases", "explain", "chat"]

INTENT_TOOLS: dict[str, list[str]] = {
    "report": ["vlm", "classifier", "retrieval"],
    "locate": ["vlm", "classifier"],
    "finding_question": ["vlm", "classifier"],
    "similar_cases": ["retrieval"],
    "explain": [],
    "chat": ["vlm"],
}
# Intents that cannot be answered without a study: the graph asks for an image instead.
# similar_cases (text query over the corpus), explain (stored evidence) and chat work without one.
IMAGE_INTENTS = frozenset({"report", "locate", "finding_question"})

log = logging.getLogger(__name__)

DEFAULT_CASES_PATH = Path(__file__).resolve().parents[1] / "eval" / "router_cases.jsonl"


class Route(BaseModel):
    """Where a turn goes: the intent, its target finding (canonical id) or phrase, and the tools."""

    intent: Intent
    finding: str | None = Field(None, description="Canonical finding id the turn names, if any.")
    findings: list[str] = Field(default_factory=list, description="Every finding the turn names, in order.")
    phrase: str | None = Field(None, description="Free-text target to ground (locate), e.g. 'left lower lobe opacity'.")
    tools: list[str] = Field(default_factory=list)
    needs_image: bool = Field(False, description="True when the intent needs a study and the turn has none: ask for one.")
    reason: str = ""
    method: Literal["rules", "llm"] = "rules"


# --------------------------------------------------------------------------------------------
# Finding extraction
# --------------------------------------------------------------------------------------------

# Colloquial and clinical shorthand the report vocabulary does not carry (router_phrases in
# knowledge/lexicon.toml). Longest match wins, so "fluid overload" (edema) beats "fluid" (effusion)
# and "kerley b lines" beats "lines".
_PHRASE_RES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"(?<![\w-])(?:{'|'.join(e.router_phrases)})(?![\w-])"), fid)
    for fid, e in lexicon().findings.items() if e.router_phrases
]

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_STOP = frozenset(
    "a an the is are was were be there any of in on to for with and or me you your it this that my "
    "i we do does did can could show where what how why please see".split()
)


# Misspellings ("pneumothroax", "cardiomegally", "atelectsis"): unknown words close to one of
# the lexicon's router_fuzzy words (difflib ratio >= _FUZZY_CUTOFF) count as that finding. Long words
# only: short ones collide.
_FUZZY_LEXICON: dict[str, str] = {w: fid for fid, e in lexicon().findings.items() for w in e.router_fuzzy}
_FUZZY_CUTOFF = 0.84
_FUZZY_MIN_LEN = 6


@dataclass(frozen=True)
class _Mention:
    start: int
    end: int
    finding: str


def _clean(text: str) -> str:
    t = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", t).strip()


def find_mentions(text: str) -> list[_Mention]:
    """Every non-overlapping finding mention in ``text`` (lower-cased), longest match first."""
    t = _clean(text)
    cands: list[_Mention] = []
    for rx, finding in _PHRASE_RES:
        for m in rx.finditer(t):
            cands.append(_Mention(m.start(), m.end(), finding))
    # The shared vocabulary (synonyms grow there): try every 1-4 word n-gram through normalize().
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(t)]
    for n in (4, 3, 2, 1):
        for i in range(len(words) - n + 1):
            chunk = words[i : i + n]
            if n == 1 and chunk[0][2] in _STOP:
                continue
            fid = normalize(t[chunk[0][0] : chunk[-1][1]])
            if fid is not None:
                cands.append(_Mention(chunk[0][0], chunk[-1][1], fid))
    covered = [(c.start, c.end) for c in cands]
    for start, end, word in words:
        if len(word) < _FUZZY_MIN_LEN or any(a <= start and end <= b for a, b in covered):
            continue
        fid = _fuzzy_finding(word)
        if fid is not None:
            cands.append(_Mention(start, end, fid))
    cands.sort(key=lambda m: (-(m.end - m.start), m.start))
    chosen: list[_Mention] = []
    for c in cands:
        if all(c.end <= o.start or c.start >= o.end for o in chosen):
            chosen.append(c)
    chosen.sort(key=lambda m: m.start)
    return chosen


@lru_cache(maxsize=4096)
def _fuzzy_finding(word: str) -> str | None:
    """Spelling-tolerant match of one word against the lexicon (cached: difflib scans it all)."""
    close = difflib.get_close_matches(word, _FUZZY_LEXICON, n=1, cutoff=_FUZZY_CUTOFF)
    return _FUZZY_LEXICON[close[0]] if close else None


# Words right before the finding a question is about: "post line placement - any pneumothorax?"
# asks about the pneumothorax, not the line.
_ASKED = re.compile(
    r"(?:\bany|\bno|\br/o|\brule out|\bis there(?: an?| any)?|\bare there(?: any)?|\bevidence (?:of|for)|"
    r"\bsigns? of|\bconcern(?:ing)? for|\beval(?:uate)? for|\bassess for|\bcheck for|\blook for|"
    r"\bsee (?:a|an|any)|\bworried about|\bsuspect(?:ed)?)\s+(?:\w+\s+)?$"
)


def extract_findings(text: str, *, allow_no_finding: bool = False) -> list[str]:
    """Canonical finding ids named in ``text``: the one a question cue points at first ("... any
    pneumothorax?"), then the rest in order of appearance, without duplicates."""
    t = _clean(text)
    mentions = find_mentions(t)
    asked = [m for m in mentions if _ASKED.search(t[max(0, m.start - 40) : m.start])]
    out: list[str] = []
    for m in asked[:1] + mentions:
        if m.finding == "no_finding" and not allow_no_finding:
            continue
        if m.finding not in out:
            out.append(m.finding)
    return out


# --------------------------------------------------------------------------------------------
# Intent cues
# --------------------------------------------------------------------------------------------


def _rx(*alts: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alts))


_EXPLAIN = _rx(
    r"\bwhy\b",
    r"\bhow (?:did|do|would|come) (?:you|it|the model)\b",
    r"\bwhat (?:made|makes|led) (?:you|it)\b",
    r"\bexplain\b",
    r"\bjustif(?:y|ication)\b",
    r"\breasoning\b|\brationale\b",
    r"\bwhat(?:'s| is| was) (?:the|your) (?:evidence|basis|source|confidence)\b",
    r"\bbased on what\b|\bon what basis\b",
    r"\bwhat did (?:the )?(?:classifier|vlm|model|models|radvlm|tools?|retrieval) (?:say|think|find|show|see)\b",
    r"\bwhere did (?:that|this|it) come from\b",
    r"\b(?:do|did) (?:the )?(?:classifier|vlm|models?) (?:and (?:the )?(?:classifier|vlm|models?) )?(?:agree|disagree)\b",
    r"\bconflict(?:ing)?\b|\bdisagree(?:ment)?\b",
    r"\b(?:agree|concur) with (?:the )?(?:classifier|vlm|model|radvlm|tool|heatmap)\b",
    r"\bhow did you (?:decide|conclude|get|arrive|come up)\b",
    r"\bwhy not\b",
)
# A reference back to an earlier answer asks for an explanation unless it asks to locate something
# ("you said cardiomegaly?" vs "where's the opacity you mentioned").
_EXPLAIN_REF = _rx(r"\byou (?:said|called|flagged|mentioned|reported|found|concluded)\b")
# Cues that only mean "explain" once the thread has something to explain; on a first turn
# "how sure are you there's a PTX?" is a finding question.
_EXPLAIN_SOFT = _rx(
    r"\bhow (?:sure|confident|certain)\b|\bconfidence\b|\bcertainty\b",
    r"\bwhich (?:tool|model|source)s?\b",
    r"\bsources?\b(?! of)",
    r"\b(?:classifier|vlm|model|op[- ]?point|operating[- ]point)(?: op[- ]?point)? (?:scores?|probabilit(?:y|ies)|output)\b",
    r"\bare you (?:sure|certain|confident)\b",
)
# "why" questions about the patient/image itself are not questions about our reasoning.
_EXPLAIN_EXCLUDE = _rx(r"\bwhy (?:is|are|does|do) (?:the|this|his|her|their) (?:patient|heart|lung|lungs|film|image)\b")

_SIMILAR = _rx(
    r"\bsimilar\b",
    r"\blook(?:s|ing)? (?:a ?lot |just )?like (?:this|it|these)\b",
    r"\bcomparable\b|\banalogous\b|\bprecedents?\b",
    r"\b(?:prior|previous|past|other|reference|matching|related|archived?) (?:cases|reports|studies|films|exams)\b",
    r"\bpriors\b",
    r"\bretrieve\b|\bretrieval\b|\bnearest neighbou?rs?\b",
    r"\bsearch (?:the |our )?(?:database|archive|reports|corpus|index|knowledge base|kb)\b",
    r"\b(?:find|pull|get|show)(?: me)? (?:some |a few |other |more )?(?:cases|reports|examples|studies)\b",
    r"\bexamples? of\b",
    r"\blike this one\b|\bcases like\b|\breports like\b",
    r"\bhave we seen\b|\bseen (?:this|it) before\b",
)

_LOCATE = _rx(
    r"\bwhere(?:'s| is| are| was| were| exactly|abouts)?\b",
    r"\bshow(?: me)?\b",
    r"\bpoint(?: me)? (?:out|to|at)\b",
    r"\bzoom(?: in)? (?:on|to|into)\b",
    r"\blocali[sz](?:e|ed|ation)\b|\blocation\b|\blocated\b",
    r"\bhighlight\b|\bmark\b|\bcircle\b|\boutline\b|\bannotate\b|\bpinpoint\b",
    r"\b(?:draw|put|give|place)(?: me)? (?:a |the )?(?:bounding )?box\b|\bbounding box\b|\bbbox\b",
    r"^(?:please |pls |can you |could you )?box\b|\bbox (?:the|it|them|around)\b",
    r"\bground(?:ing)?\b(?![- ]?glass)",
    r"\b(?:which|what) (?:side|lobe|zone|lung|level)\b",
    r"\bheat ?map\b|\bsaliency\b|\bgrad-?cam\b|\boverlay\b",
)
# "show me" followed by a report-ish object is not a locate request.
_LOCATE_EXCLUDE = _rx(r"\bshow(?: me)? (?:the |a |your )?(?:report|findings|impression|summary|read)\b")

_REPORT_STRONG = _rx(
    r"\breports?\b(?! (?:say|said|mention))",
    r"\bfindings (?:and|&|\+) impression\b|\bimpression\b(?! of)",
    r"\bdictat(?:e|ion)\b",
    r"\bwrite[- ]?up\b|\bwrite (?:it|this) up\b|\bwrite\b",
    r"\bread (?:this|the|my|it|that|these)\b|\bread this\b|\bwet read\b|\bprelim(?:inary)?\b|\bfull read\b",
    r"\b(?:overall|your|a|quick|final|formal|official) (?:read|reading|interpretation)\b",
    r"\bdraft\b",
    r"\bstructured\b",
)
_REPORT_WEAK = _rx(
    r"\bfindings\b",
    r"\binterpret(?:ation)?\b",
    r"\bdescribe\b|\bdescription\b",
    r"\bsummar(?:y|ise|ize)\b",
    r"\bwhat (?:do|can) you see\b|\bwhat(?:'s| is) (?:going on|wrong|the diagnosis|your read|your impression|up with)\b",
    r"\bwhat do you (?:think|make of)\b",
    r"\bany(?:thing)? (?:abnormal(?:it(?:y|ies))?|wrong|concerning|significant|acute|remarkable|worrying|off)\b",
    r"\babnormal(?:it(?:y|ies))?\b",
    r"\bnormal\b|\bunremarkable\b|\bclear\b",
    r"\bassess(?:ment)?\b|\bevaluat(?:e|ion)\b|\breview\b|\banaly[sz]e\b|\blook at\b|\bcheck (?:this|the|it)\b",
    r"\bsum (?:it|this|that) up\b|\bdifferential\b|\bdiagnos[ie]s\b|\bddx\b",
    r"\b(?:the |both )?lungs?\b(?! (?:cancer|mass|nodule|lesion|opacity))|\b(?:left|right|lung) bases?\b|"
    r"\banything (?:in|on|at) (?:the )?(?:left|right|lung|chest|base|apex|apices)",
)
_CHAT_GENERIC = _rx(
    r"^(?:hi|hello|hey|yo|good (?:morning|afternoon|evening)|thanks?|thank you|thx|ty|cheers|ok(?:ay)?|great|"
    r"cool|perfect|got it|bye|goodbye|see you)\b",
    r"\bwho are you\b|\bwhat (?:can|do) you do\b|\bwhat are you\b|\bhelp\b|\bhow (?:do|does) (?:this|it) work\b",
)
# Educational questions about a finding in general, not about this image.
_CHAT_DEFINITION = _rx(
    r"^(?:what(?:'s| is| are) (?:a |an )?|define |definition of |what does )(?!the\b|this\b|that\b)[\w\s-]+"
    r"(?: mean)?\??$",
    r"\bwhat causes\b|\bhow (?:is|are|do you) (?:it |they )?(?:treat|manage)",
    r"\bdifference between\b|\bdistinguish(?:ing)? between\b|\bhow (?:do|can) you tell\b",
    r"\bin general\b|\btypically\b|\bdifferential (?:diagnosis )?(?:for|of)\b",
)
# Anatomy-only targets for locate when no vocabulary finding is named.
_LOCATE_TARGET = re.compile(
    r"(?:where(?:'s| is| are| was| were)?|show(?: me)?|point(?: me)? (?:out|to|at)|zoom(?: in)? (?:on|to|into)|locali[sz]e|highlight|mark|circle|"
    r"outline|annotate|pinpoint|indicate|box|draw a box (?:around|on)|bounding box (?:for|around|of|on)|"
    r"location of|ground|find)\s+(?:me\s+)?(?:exactly\s+)?(?:where\s+)?(?P<target>.+)$"
)
_TRAIL = re.compile(r"(?:\s+(?:is|are|was|located|seen|please|on (?:the|this) (?:image|film|x-?ray|cxr)|"
                    r"in (?:the|this) (?:image|film)|for me|again|exactly|"
                    r"(?:that |which )?you (?:mentioned|said|described|found|flagged|saw|reported)))+\s*$")


_NOT_A_TARGET = re.compile(
    r"^(?:it|that|this|they|them|those|these|one|ones|there|here|i|we|you|should|can|could|would|do|does|"
    r"is|are)(?:\s|$)"
)


# "show me the classifier heatmap for cardiomegaly": the target is what follows the view words.
_VIEW_WORDS = re.compile(
    r"^(?:the\s+)?(?:classifier\s+|gradient\s+)?(?:heat ?map|saliency(?: map)?|grad-?cam|overlay|box(?:es)?)"
    r"(?:\s+(?:for|of|on|around|showing))?(?:\s+the)?\s*"
)


def _locate_phrase(t: str) -> str | None:
    """The free-text target of a locate request: 'where is the left lower lobe opacity?' -> that phrase."""
    s = re.sub(r"[?.!,;:]+", " ", t).strip()
    m = _LOCATE_TARGET.search(s)
    if not m:
        return None
    target = m.group("target").strip()
    target = re.sub(r"^(?:is|are|was|were|the|a|an|that|this|those|these|it|its|exactly)\s+", "", target)
    target = re.sub(r"^(?:the|a|an|that|this|those|these)\s+", "", target)
    target = _TRAIL.sub("", target).strip()
    target = _VIEW_WORDS.sub("", target).strip()
    if not target or _NOT_A_TARGET.match(target):
        return None  # "where is it?", "where should I look": the graph uses the thread's last finding
    return target


def _classify(t: str, findings: list[str], *, has_history: bool) -> tuple[str, str]:
    """(intent, reason) for the cleaned turn ``t``; the rule order is the routing policy."""
    named = ", ".join(display_name(f).lower() for f in findings)
    locate_cue = bool(_LOCATE.search(t)) and not _LOCATE_EXCLUDE.search(t)
    explain_cue = (bool(_EXPLAIN.search(t)) or (has_history and bool(_EXPLAIN_SOFT.search(t)))
                   or (bool(_EXPLAIN_REF.search(t)) and not locate_cue))
    if explain_cue and not _EXPLAIN_EXCLUDE.search(t) and not _CHAT_DEFINITION.search(t):
        if has_history or findings or not _SIMILAR.search(t):
            return "explain", "asks why/how a conclusion was reached: answer from this thread's evidence"
    if _SIMILAR.search(t):
        return "similar_cases", "asks for similar prior cases: search the report index"
    if locate_cue:
        return "locate", f"asks where {named or 'a region'} is: ground it with the VLM and classifier heatmap"
    if _CHAT_GENERIC.search(t) and not findings and not _REPORT_STRONG.search(t):
        return "chat", "conversational turn with no clinical target"
    if findings and _CHAT_DEFINITION.search(t):
        return "chat", f"general question about {named}, not about this image"
    if _REPORT_STRONG.search(t):
        return "report", "asks for a read of the whole study: full report with all tools"
    if findings:
        return "finding_question", f"asks about {named}: targeted VLM question + classifier score"
    if _REPORT_WEAK.search(t):
        return "report", "asks what the study shows overall: full read with all tools"
    return "chat", "no report, finding, location, similar-case or explanation cue: free chat"


_MAX_CHARS = 4000  # a pasted document is routed on its first 4,000 characters (~25 ms worst case)


def route(text: str, *, has_image: bool, has_history: bool = False) -> Route:
    """Route one turn by rules (no model, no I/O). See the module docstring for the rule order."""
    t = _clean(text or "")[:_MAX_CHARS]
    if not t:
        intent, reason, findings = "chat", "empty turn", []
    else:
        findings = extract_findings(t)
        intent, reason = _classify(t, findings, has_history=has_history)
        if intent == "explain" and not findings:
            # "why did you say it's normal?" names no_finding only in an explanation.
            findings = [f for f in extract_findings(t, allow_no_finding=True) if f == "no_finding"]
    return _make_route(intent, findings, t, reason, has_image=has_image, method="rules")


def _make_route(intent: str, findings: list[str], t: str, reason: str, *, has_image: bool,
                method: Literal["rules", "llm"], phrase: str | None = None) -> Route:
    if intent == "locate" and phrase is None:
        phrase = _locate_phrase(t)
    needs_image = intent in IMAGE_INTENTS and not has_image
    if needs_image:
        reason = f"{reason} (no image yet: ask for one)"
    return Route(
        intent=intent,  # type: ignore[arg-type]
        finding=findings[0] if findings else None,
        findings=findings,
        phrase=phrase if intent == "locate" else None,
        tools=list(INTENT_TOOLS[intent]),
        needs_image=needs_image,
        reason=reason,
        method=method,
    )


# --------------------------------------------------------------------------------------------
# Optional LLM routing (settings.router_llm); rules are the fallback on any error.
# --------------------------------------------------------------------------------------------


class RouteDecision(BaseModel):
    """Structured output asked of the LLM router."""

    intent: Intent = Field(description="report | locate | finding_question | similar_cases | explain | chat")
    finding: str | None = Field(None, description="Finding the user names, in plain words (e.g. 'effusion'), or null.")
    phrase: str | None = Field(None, description="For locate: the region or phrase to find, or null.")
    reason: str = Field("", description="One short line: why this intent.")


_LLM_SYSTEM = (
    "You route turns of a chest X-ray assistant. Intents: report (full read/findings+impression), "
    "locate (where is X / show X on the image), finding_question (is X present?), similar_cases "
    "(find similar prior cases/reports), explain (why did you conclude X / what evidence), chat (anything else). "
    "Return the intent, the finding named (if any), the phrase to locate (if any) and a one-line reason."
)


def route_with_llm(text: str, *, has_image: bool, llm: Any, has_history: bool = False) -> Route:
    """Ask a LangChain chat model (``with_structured_output``) to route; any error -> ``route()``."""
    fallback = route(text, has_image=has_image, has_history=has_history)
    try:
        structured = llm.with_structured_output(RouteDecision)
        out = structured.invoke([("system", _LLM_SYSTEM), ("user", text)])
        if isinstance(out, dict):
            out = RouteDecision.model_validate(out)
        if not isinstance(out, RouteDecision):
            raise TypeError(f"unexpected structured output {type(out).__name__}")
        findings: list[str] = []
        if out.finding:
            fid = normalize(out.finding) or next(iter(extract_findings(out.finding, allow_no_finding=True)), None)
            if fid:
                findings = [fid]
        if not findings:
            findings = fallback.findings
        reason = (out.reason or f"LLM router chose {out.intent}").strip().splitlines()[0][:200]
        return _make_route(out.intent, findings, _clean(text), reason, has_image=has_image, method="llm",
                           phrase=out.phrase if out.intent == "locate" else None)
    except Exception as exc:  # noqa: BLE001 - any LLM failure falls back to the rules
        return fallback.model_copy(update={"reason": f"{fallback.reason} (LLM router failed: {type(exc).__name__})"})


def make_router(settings: Any = None, *, llm: Any = None):
    """A ``(text, *, has_image, has_history) -> Route`` callable: LLM-first when settings.router_llm is set
    (or an ``llm`` is given), bounded by ``settings.router_timeout_s``: past it the rules answer."""
    model_name = getattr(settings, "router_llm", None) if settings is not None else None
    if llm is None:
        if not model_name:
            return route
        try:
            from langchain.chat_models import init_chat_model  # type: ignore[import-not-found]

            llm = init_chat_model(model_name)
        except Exception as exc:  # noqa: BLE001 - missing provider package or credentials: rules only
            log.warning("router_llm=%r unavailable (%s: %s); routing by rules. Install `langchain` and the "
                        "provider package (e.g. langchain-openai) to enable it.", model_name, type(exc).__name__, exc)
            return route
    timeout_s = float(getattr(settings, "router_timeout_s", None) or ROUTER_TIMEOUT_S)

    def _route(text: str, *, has_image: bool, has_history: bool = False) -> Route:
        return _bounded(lambda: route_with_llm(text, has_image=has_image, llm=llm, has_history=has_history),
                        timeout_s, lambda: route(text, has_image=has_image, has_history=has_history))

    return _route


ROUTER_TIMEOUT_S = 10.0


def _bounded(call: Any, timeout_s: float, fallback: Any) -> Route:
    """``call()`` on a daemon thread; after ``timeout_s`` the rules' route (a hung LLM request keeps
    its thread until the client's own timeout, but the turn no longer waits for it)."""
    import threading

    box: list[Route] = []
    worker = threading.Thread(target=lambda: box.append(call()), name="cxr-router-llm", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if box:
        return box[0]
    r = fallback()
    return r.model_copy(update={"reason": f"{r.reason} (LLM router timed out after {timeout_s:g} s)"})


# --------------------------------------------------------------------------------------------
# Evaluation over a labelled set
# --------------------------------------------------------------------------------------------


def load_cases(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Read the labelled routing set (JSONL: text, has_image, intent, finding[, split])."""
    p = Path(path) if path else DEFAULT_CASES_PATH
    cases = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                cases.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{i}: not valid JSON ({exc.msg})") from exc
    return cases


def evaluate_router(cases: Iterable[dict[str, Any]], router=route) -> dict[str, Any]:
    """Accuracy of ``router`` on labelled cases: intent, finding (where the case has the key), both.

    eval/router_cases.jsonl splits: ``dev`` (written while building the rules) and ``heldout1..3``
    (each written after freezing the rules, then scored once). First-sight accuracy (intent and
    finding): heldout1 24/28 = 0.857, heldout2 21/22 = 0.955, heldout3 25/26 = 0.962 (70/76 =
    0.921 overall). The misses were then fixed with general rules, so today's 1.0 on those splits
    is no longer a held-out number; write a fresh split to measure again.

    Returns {"n", "accuracy" (intent and finding both right), "intent_accuracy", "finding_accuracy",
    "per_intent": {intent: {"n", "correct"}}, "confusion": {gold: {predicted: count}},
    "per_split": {split: accuracy}, "errors": [...]}.
    """
    n = ok_intent = ok_finding = n_finding = ok_both = 0
    per_intent: dict[str, Counter] = defaultdict(Counter)
    confusion: dict[str, Counter] = defaultdict(Counter)
    split_tot: Counter = Counter()
    split_ok: Counter = Counter()
    errors = []
    for case in cases:
        r = router(case["text"], has_image=bool(case.get("has_image", True)),
                   has_history=bool(case.get("has_history", False)))
        n += 1
        gold = case["intent"]
        good_intent = r.intent == gold
        good_finding = True
        if "finding" in case:
            n_finding += 1
            good_finding = r.finding == case["finding"]
            ok_finding += good_finding
        ok_intent += good_intent
        ok_both += good_intent and good_finding
        per_intent[gold]["n"] += 1
        per_intent[gold]["correct"] += good_intent and good_finding
        confusion[gold][r.intent] += 1
        split = case.get("split", "dev")
        split_tot[split] += 1
        split_ok[split] += good_intent and good_finding
        if not (good_intent and good_finding):
            errors.append({"text": case["text"], "gold": [gold, case.get("finding")], "got": [r.intent, r.finding]})
    return {
        "n": n,
        "accuracy": ok_both / n if n else 0.0,
        "intent_accuracy": ok_intent / n if n else 0.0,
        "finding_accuracy": ok_finding / n_finding if n_finding else 1.0,
        "per_intent": {k: dict(v) for k, v in sorted(per_intent.items())},
        "confusion": {k: dict(v) for k, v in sorted(confusion.items())},
        "per_split": {s: split_ok[s] / split_tot[s] for s in sorted(split_tot)},
        "errors": errors,
    }
