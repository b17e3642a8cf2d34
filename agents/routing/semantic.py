"""Intent from meaning: the rules' route, checked by a classifier over MiniLM embeddings where the rules are unsure.

Why: the cue-word rules are precise where a turn carries one unambiguous cue family ("where is ...",
"find similar cases", "why did you ..."), and brittle elsewhere: no cue at all ("Any signs of TB?" ->
chat), or cues of several families resolved by rule order ("Search the report database for ..." ->
report). There the bundled MiniLM (tools/retrieval/embedder.py) embeds the turn and a classifier trained on
labelled turns (agents/routing/examples.jsonl: turns written for it, questions outside radiology among them,
and the sentences of the tuning sets eval/router_cases.jsonl and eval/router_tuning.jsonl; never a held-out
set) gives its intent, which wins when it is clear enough.

Policy (`route_semantic`):
1. The rules route every turn (agents.routing.rules.route). A turn is *rule-decided* when exactly one decisive cue
   family fires (locate, explain, similar cases, chat) and the rules chose it, or when the whole turn is a
   plain imperative report request ("Write a report"; `_PLAIN_REPORT`). Those return at once (no
   embedding: p50 well under 5 ms). So are, with no cue family against them, a yes/no existence question
   about one specific thing ("is there dextrocardia?", also after clinical context: "65M smoker, any
   mass?"), a device's position, a terse finding question ("apical ptx?"), a differential between named
   findings ("pna vs atx LLL?"), a question about the whole study ("is the chest normal?") and a list of
   structures ("lines, lungs, pleura, heart, bones": a report).
   After sentences of context, the classifier reads the last sentence ("I am a GP ... Is the heart too big?").
2. Otherwise a logistic regression over MiniLM embeddings of the labelled examples gives each intent a
   probability; its best intent replaces the rules' when it has >= MIN_SCORE and leads the rules' intent by
   >= MIN_MARGIN.
3. Out-of-vocabulary findings: a finding question that names no vocabulary finding ("is there free air
   under the diaphragm?") keeps the asked-about words as `Route.phrase` (RadVLM answers and grounds free
   text).
The embedder loads lazily on the first undecided turn; if it cannot load, routing goes on by rules alone
and the route's reason says so. Where `cxr-agent router train` has built a fine-tuned router model under the
data dir from the current examples file (agents/routing/finetune.py, router_model.py), its fine-tuned MiniLM
and saved head take the place of the bundled MiniLM and the regression fitted at start-up: still one
embedding per undecided turn. Otherwise the regression routes and a log line says why.
"""

from __future__ import annotations

import ctypes
import json
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from agents.routing import router_model, rules
from agents.routing.mentions import CLAUSE_SPLIT, UNNAMED, clean_cut, find_mentions, is_survey
from agents.routing.rules import Route

log = logging.getLogger(__name__)

EXAMPLES_PATH = Path(__file__).resolve().with_name("examples.jsonl")
MIN_SCORE = 0.6  # probability of the best intent
MIN_MARGIN = 0.3  # its lead over the probability of the rules' intent
# Cue families precise enough to decide alone. A lone report cue is not ("search the report database for
# ...", "reports like this"), nor a finding named with no cue ("what does 'blunting of the costophrenic
# angle' mean?").
DECISIVE = frozenset({"locate", "explain", "similar_cases", "chat"})
# ...except a plain imperative request that is nothing but a report request, the whole turn ("Write a
# report", "pls generate radiology report", "Dictate a structured report for this film."): decisive.
_PLAIN_REPORT = re.compile(
    r"(?:(?:please|pls|ok|now),? )?(?:(?:can|could|would|will) you (?:please )?)?(?:please |pls )?"
    r"(?:write|generate|draft|produce|create|prepare|dictate|give me|provide|make)(?: me)? "
    r"(?:(?:a|an|the|my|your) )?(?:(?:full|complete|formal|final|preliminary|prelim|structured|brief|short|"
    r"radiology|chest|cxr|x-?ray|draft) ){0,3}report"
    r"(?: (?:for|of|on) (?:this|the|my) (?:(?:chest|pa|ap|portable|frontal|lateral) ){0,2}"
    r"(?:study|film|image|cxr|x-?ray|radiograph|exam))?(?: please| pls)?[ .!?]*"
)


def load_examples(path: str | Path | None = None) -> list[tuple[str, str]]:
    """(text, intent) pairs of the classifier's labelled examples (JSONL: text, intent)."""
    p = Path(path) if path else EXAMPLES_PATH
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append((str(row["text"]), str(row["intent"])))
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{p}:{i}: expected a JSON object with 'text' and 'intent' ({exc})") from exc
    return out


def delexicalise(t: str) -> str:
    """Vocabulary finding mentions replaced by 'the finding': the intent, not the topic, should be near
    ("similar reports with pneumothorax" must not land on "where is the pneumothorax")."""
    out, last = [], 0
    for m in sorted(find_mentions(t), key=lambda m: m.start):
        if m.start >= last:
            out.append(t[last : m.start] + "the finding")
            last = m.end
    return "".join(out) + t[last:]


class IntentClassifier:
    """Logistic regression over sentence embeddings of the labelled examples; scores are its probabilities.

    Texts are compared delexicalised (see `delexicalise`). Chosen over nearest-example voting by 5-fold
    cross-validation of the whole route_semantic policy on the 443 labelled turns (examples + eval tuning
    sets), intent accuracy: rules alone 0.793, 2-nearest-examples 0.928, logistic regression (C=10) 0.944."""

    name = "logistic regression over the bundled MiniLM's embeddings"

    def __init__(self, encode: Callable[[list[str]], np.ndarray], examples: list[tuple[str, str]],
                 *, c: float = 10.0) -> None:
        if len({intent for _, intent in examples}) < 2:
            raise ValueError("the intent classifier needs labelled examples of at least two intents")
        from sklearn.linear_model import LogisticRegression

        self.encode = encode
        x = np.asarray(encode([delexicalise(rules._clean(text)) for text, _ in examples]), dtype=np.float32)
        self.model: Any = LogisticRegression(C=c, max_iter=2000).fit(x, [intent for _, intent in examples])
        model = self.model
        self.intents = [str(i) for i in model.classes_]
        # the fitted weights, for a softmax without sklearn's per-call input checks (most of its time on one row)
        self._coef = np.asarray(model.coef_, dtype=np.float64)
        self._intercept = np.asarray(model.intercept_, dtype=np.float64)

    @classmethod
    def from_head(cls, encode: Callable[[list[str]], np.ndarray], intents: list[str], coef: np.ndarray,
                  intercept: np.ndarray, *, name: str) -> IntentClassifier:
        """A classifier from a saved regression head (no refit): the fine-tuned router model's."""
        coef, intercept = np.atleast_2d(np.asarray(coef, np.float64)), np.asarray(intercept, np.float64).ravel()
        rows = 1 if len(intents) == 2 else len(intents)
        if len(intents) < 2 or coef.shape[0] != rows or intercept.shape != (rows,):
            raise ValueError(f"a head for {len(intents)} intents needs {rows} weight rows and intercepts, "
                             f"got {coef.shape[0]} and {intercept.shape[0]}")
        self = cls.__new__(cls)
        self.model = None
        self.encode, self.intents, self._coef, self._intercept, self.name = encode, list(intents), coef, intercept, name
        return self

    def probabilities(self, v: np.ndarray) -> np.ndarray:
        """The regression's intent probabilities for one embedding (as ``predict_proba``)."""
        z = self._coef @ np.asarray(v, dtype=np.float64).ravel() + self._intercept
        if len(self.intents) == 2:  # a binary regression is one logit, for the second intent
            p = 1.0 / (1.0 + np.exp(-z[0]))
            return np.array([1.0 - p, p])
        e = np.exp(z - z.max())
        return e / e.sum()

    def scores(self, text: str) -> dict[str, float]:
        v = np.asarray(one_thread(self.encode, [delexicalise(rules._clean(text))]), dtype=np.float32)
        return dict(zip(self.intents, (float(p) for p in self.probabilities(v[0])), strict=True))


def _single_omp_thread() -> None:
    """Initialiser of the routing thread: its OpenMP team is this thread alone (other threads keep theirs).

    torch's own set_num_threads would also change the count every thread started later picks up."""
    try:
        import torch

        torch.get_num_threads()  # torch's per-thread set-up first, or it would reset the count below
        libs = sorted(Path(torch.__file__).parent.joinpath("lib").glob("libgomp*.so*"))
        if libs:
            ctypes.CDLL(str(libs[0])).omp_set_num_threads(1)
    except Exception as exc:  # noqa: BLE001 - another OpenMP runtime: route with the process's setting
        log.debug("routing thread keeps the process's OpenMP threads (%s)", exc)


_ONE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxr-router",
                                 initializer=_single_omp_thread)


def one_thread(encode: Callable[[list[str]], np.ndarray], texts: list[str]) -> np.ndarray:
    """``encode(texts)`` on the routing thread, one OpenMP thread.

    Why: one short sentence is too little work to split; a team of OpenMP threads on a CPU shared with
    other work waits at every layer's barrier for a thread that is not running. Measured on 2 shared
    cores (load 8-12), MiniLM forward of one sentence: one thread p50 23-31 ms, p95 56-64 ms; two
    threads p50 69-74 ms, p95 419-831 ms."""
    return _ONE_THREAD.submit(encode, texts).result()


_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"classifier": None, "error": None, "fallback": None}
FINE_TUNED = "fine-tuned MiniLM (SetFit) with its logistic regression head"


def load_fine_tuned(directory: str | Path, examples_path: str | Path | None = None) -> IntentClassifier:
    """The fine-tuned router model at ``directory`` (agents/routing/router_model.py); RouterModelError when it
    is absent, stale (built from other examples than ``examples_path``) or unreadable."""
    p = Path(examples_path) if examples_path else EXAMPLES_PATH
    router_model.check(directory, p)
    intents, coef, intercept = router_model.read_head(directory)
    try:
        from sentence_transformers import SentenceTransformer

        body = SentenceTransformer(str(Path(directory) / "body"), device="cpu", local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a broken body is a broken model, said as such
        raise router_model.RouterModelError(f"cannot load the fine-tuned body at {directory}/body: "
                                            f"{type(exc).__name__}: {exc}") from exc

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(body.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False))

    return IntentClassifier.from_head(encode, intents, coef, intercept, name=FINE_TUNED)


def default_classifier() -> IntentClassifier | None:
    """The process-wide intent classifier, built on first use: the fine-tuned router model under the data dir
    when it is there and current, else logistic regression over the bundled MiniLM (a log line says why);
    None if neither can load."""
    with _LOCK:
        if _STATE["classifier"] is None and _STATE["error"] is None:
            try:
                from cxr_agent.settings import get_settings

                directory = router_model.model_dir(get_settings().data_dir)
                _STATE["classifier"] = load_fine_tuned(directory)
                log.info("semantic router: %s (%s)", FINE_TUNED, directory)
            except router_model.RouterModelError as exc:
                _STATE["fallback"] = str(exc)
                log.info("semantic router: %s; %s", IntentClassifier.name, exc)
            if _STATE["classifier"] is None:
                try:
                    from tools.retrieval.embedder import get_embedder

                    emb = get_embedder()
                    _STATE["classifier"] = IntentClassifier(emb.encode, load_examples())
                except Exception as exc:  # noqa: BLE001 - any load failure means: route by rules alone
                    _STATE["error"] = f"{type(exc).__name__}: {exc}"
                    log.warning("semantic router unavailable (%s); routing by rules only", _STATE["error"])
        return _STATE["classifier"]


def classifier_info() -> dict[str, str | None]:
    """Which intent classifier routes this process (loading it if needed), and why not the fine-tuned one."""
    clf = default_classifier()
    return {"classifier": clf.name if clf is not None else None, "fallback_reason": _STATE["fallback"],
            "error": _STATE["error"]}


def _families(t: str) -> set[str]:
    """The intent cue families that fire in the cleaned turn (soft explain cues count as explain)."""
    fams = set()
    if (rules._EXPLAIN.search(t) or rules._EXPLAIN_SOFT.search(t) or rules._EXPLAIN_REF.search(t)) \
            and not rules._DEFINE.search(t) and not re.search(rules._EXPLAIN_IMAGE, t):
        fams.add("explain")
    if rules._SIMILAR.search(t):
        fams.add("similar_cases")
    if rules._LOCATE.search(t) and not rules._LOCATE_EXCLUDE.search(t):
        fams.add("locate")
    if rules._REPORT_STRONG.search(rules._SIMILAR.sub(" ", t)) or is_survey(t):  # "past reports describing ...":
        fams.add("report")  # similar cases; "lines, lungs, pleura, heart, bones": the systematic read
    if rules._CHAT_GENERIC.search(t) or rules._CHAT_DEFINITION.search(t):
        fams.add("chat")
    return fams


# "please read the film": a request to read the study, nothing else
_PLAIN_READ = re.compile(r"(?:(?:please|pls|can you|could you|kindly),? )*(?:read|go through|go over|look over|run through)"
                         r"(?: (?:this|the|my) (?:(?:chest|portable) )?"
                         r"(?:film|study|image|cxr|x-?ray|radiograph|exam))?(?: for me)?(?:,? (?:please|pls))?[ .!?]*")
# A question about the whole study ("is the chest normal?", "any abnormalities?", "what's the impression?"):
# answered by the whole read, whatever the classifier makes of so few words.
_WHOLE_STUDY = re.compile(
    r"^(?:(?:so|and|ok|okay|then|now|overall|please|pls|do you think|would you say|in your opinion),? )*(?:"
    r"(?:is|does) (?:this|the|my|that) (?:(?:chest|pa|ap|portable|frontal) )?(?:film|study|image|cxr|x-?ray|radiograph|"
    r"exam|chest)(?: look)? (?:normal|ok(?:ay)?|fine|clear|unremarkable|abnormal)"
    r"|(?:this|the) (?:(?:chest|pa|ap|portable|frontal) )?(?:film|study|image|cxr|x-?ray|radiograph|exam|chest) "
    r"(?:is|looks) (?:normal|ok(?:ay)?|fine|clear|unremarkable|abnormal)"
    r"|is (?:this|it) an? (?:normal|abnormal|unremarkable) (?:(?:chest|pa|ap|portable|frontal) )?(?:film|study|image|cxr|"
    r"x-?ray|radiograph|exam|chest)"
    r"|(?:ab)?normal(?: (?:film|study|cxr|x-?ray|chest))?"
    r"|(?:are|do) (?:the )?(?:both )?lungs(?: look)? (?:clear|normal|ok(?:ay)?|fine)"
    r"|(?:(?:(?:is )?(?:this|it|the (?:film|study|cxr|x-?ray|chest))|cxr|film|x-?ray|chest) )?(?:nad|wnl)"  # "NAD?": no abnormality detected
    r"|is (?:everything|it all|all) (?:within normal limits|normal|ok(?:ay)?|fine|clear)"
    r"|(?:can|could|should|may) i (?:sign|call|report|pass) (?:this|it) (?:off |out )?as (?:an? )?(?:normal|clear|unremarkable)"
    r"(?: (?:film|study|cxr|x-?ray|chest|one))?"
    r"|(?:'?no acute (?:disease|abnormality|findings?|process)'? )?(?:ok|okay|safe|fine) to sign(?: (?:off|out))?"
    r"|any(?:thing)? (?:abnormalit(?:y|ies)|acute|abnormal|wrong|significant)(?: findings?)?"
    r"|is there (?:any(?:thing)? )?(?:abnormalit(?:y|ies)|anything (?:acute|abnormal|wrong))"
    r"|what(?:'s| is) (?:the|your) (?:overall )?(?:impression|read|reading|interpretation)"
    r")(?: (?:on|in|of) (?:this|the) (?:film|study|image|cxr|x-?ray|radiograph|chest|one))?(?: to you)?"
    r"(?:,? (?:yes or no|yes|right|correct|true))?[ ?.!]*$")  # "this x-ray is normal, yes or no?"


_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# A yes/no question about this patient's or this film's named finding ("is the heart actually big or is that just AP
# magnification?"): never a general question, whatever the classifier makes of its other words
_OF_THIS = re.compile(r"^(?:(?:so|and|ok|but|then),? )?(?:is|are|does|do|has|have|was|were) (?:the|this|that|his|her|my|"
                      r"these|those)\b")


def _asked_sentence(t: str) -> str:
    """What the classifier reads: the last sentence when sentences of context come before it ("I am a GP and not
    very experienced with x-rays. Is the heart too big?"), else the whole turn."""
    sentences = [x for x in _SENTENCE.split(t) if x.strip()]
    if len(sentences) < 2 or len(sentences[-1].split()) < 3 or any(x.rstrip().endswith("?") for x in sentences[:-1]):
        return t  # one sentence, a terse last one, or questions before it ("ptx? and check the chest tube")
    return sentences[-1]


def _last_clause(t: str) -> str:
    """Clinical context before the question ("65M smoker, weight loss, any mass?"): the question is the last clause."""
    return CLAUSE_SPLIT.split(t)[-1].strip()


def rule_decided(t: str, route: Route, fams: set[str] | None = None) -> bool:
    """Whether the rules' route stands without a second opinion (see the module docstring). ``fams``: the
    turn's cue families when the caller has them already (``_families(t)``)."""
    if route.intent == "chat" and t.startswith(rules._GENERAL):
        return True
    fams = _families(t) if fams is None else fams
    if not fams and route.intent == "finding_question" and route.findings and (
            _existence_target(t) or rules.asked_aspect(t) == "position" or _terse(t) or _terse_then_context(t)
            or _COMMAND.match(t) or _OF_THIS.match(t) or _OF_THIS.match(_last_clause(t)) or _QUERY.search(t)
            or rules.asks_comparison(t)):
        return True  # "is there a pneumothorax?", "is the PICC tip in a good place?", "apical ptx?", "has the
        # effusion improved?", "does the mediastinal contour look broader?": a question about a finding
    if route.intent == "report" and fams <= {"report"} and re.search(rules._SAME_AGAIN, t):
        return True  # "now do the same for today's film", after a whole read
    first, joined, _ = rules.first_question(t)
    if joined and fams == {"locate"} and route.intent == "finding_question" and not rules._LOCATE.search(first):
        return rule_decided(first.strip(), route, _families(first))  # "is there an effusion, and where is it?"
    if len(fams) != 1 or route.intent not in fams:
        return False
    last = _last_clause(t)
    return route.intent in DECISIVE or (route.intent == "report" and (
        any(rx.fullmatch(x) is not None for rx in (_PLAIN_REPORT, _PLAIN_READ) for x in (t, last)) or is_survey(t)
        or _READ_ORDER.match(t) is not None))


# "Dictate it like a consultant would, findings then conclusion": an order to read the study itself (not "write a report
# comparing with the prior": a report of something, the classifier's to weigh), however it goes on
_READ_ORDER = re.compile(r"^(?:(?:please|pls|ok|now|so|can you|could you|would you),? )*(?:dictate|write up|report on|"
                         r"go through|go over) (?:it|this|that|(?:the|this|my) (?:(?:chest|portable) )?(?:film|study|image|"
                         r"x-?ray|cxr|radiograph|exam))\b")


# "cxr for ?pna", "query effusion": the clinician's query mark or word before what is to be excluded
_QUERY = re.compile(r"(?:^|\s)\?(?=[a-z])|^(?:cxr |film |x-?ray )?(?:for )?query\b")


# "check the ETT", "eval for PTX", "assess heart size", "look at the CP angles for fluid": an order to look at what
# the turn names is a question about it (a whole read names no finding, or lists structures: a report cue)
_COMMAND = re.compile(r"^(?:(?:pls|please|can you|could you|kindly),? )*(?:check|look at|look for|assess|eval(?:uate)?|"
                      r"review|examine|inspect|confirm|verify|screen for|rule out|r/o|exclude)\b")


# "apical ptx?", "PNA f/u?", "small R eff?": findings named with nothing but where, which side, how large or new
_TERSE = re.compile(r"^[^\s?]+(?: [^\s?]+){0,7} ?\?*$")  # "bilat pl eff": the question mark may be left out
_MODIFIERS = frozenset(
    "a an any l r rt lt rigt rite lft left right bilat b/l bilateral both apical basal basilar base bases apex apices upper lower mid "
    "anterior posterior superior inferior lateral medial central peripheral mediastinal hilar perihilar paratracheal "
    "pl pleural lung lungs pulmonary retrocardiac hilum hila in at the "
    "middle zone lobe lll rll rul lul rml lingula small large tiny big moderate trace new residual persistent "
    "f/u followup follow-up s/p post vs or and still again now "
    # what a finding is like: "linear atelectasis?", "loculated eff?", "subtle ggo?"
    "linear compressive passive dependent segmental subsegmental patchy focal diffuse multifocal mild severe early "
    "acute chronic old healing healed loculated tension calcified cavitating multiple dense faint subtle possible "
    "probable likely obvious minimal significant massive extensive widespread scattered ill-defined well-defined "
    "round rounded irregular spiculated streaky hazy layering free-flowing simple complex "
    # where it is: "fluid in the fissure?", "ptx on the right side?"
    "fissure fissures costophrenic cp angle angles hemithorax hemidiaphragm diaphragm chest side sided zones lobes "
    "field fields region area on of changes change frank subpleural peripherally bilaterally today seen visible markings pattern shadowing "
    "present to towards anterior posterior rib ribs head shaft border borders".split())
_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)")  # "lytic lesion in the right 5th rib?"


# "mediastinum widened after MVC?", "ptx post line placement?": the occasion after the finding changes nothing,
# nor the film it is asked of ("widend mediastinum on the trauma film?", "cmg? AP portable")
_OCCASION = re.compile(r" (?:after|post|following|s/p|since|from) [\w/'-]+(?: [\w/'-]+){0,2} ?(?=\?+$)"
                       r"|(?: (?:on|in) (?:this|the|that) (?:[\w-]+ ){0,2}(?:film|x-?ray|cxr|study|image|radiograph|one|pa|ap|"
                       r"view)| (?:ap|pa)(?: portable| supine| erect)?| portable| supine| erect)(?= ?\?*$)")


def _terse(t: str, spans: tuple[tuple[int, int], ...] = ()) -> bool:
    """A few words that name a finding (or ``spans``: the user's words for one) and nothing but where, which side,
    what it is like, or its occasion."""
    if not _TERSE.match(t):
        return False
    named = [(m.start, m.end) for m in find_mentions(t)] + list(spans)
    if not named:
        return False
    keep = [True] * len(t)
    for a, b in named + [(m.start(), m.end()) for m in _OCCASION.finditer(t)]:
        keep[a:b] = [False] * (b - a)
    rest = "".join(c if k else " " for c, k in zip(t, keep, strict=True))
    return all(w in _MODIFIERS or _ORDINAL.fullmatch(w) for w in re.findall(r"[a-z0-9/-]+", rest))


def _terse_then_context(t: str) -> bool:
    """A terse finding question, then clinical context with no question of its own ("widened mediastinum? MVC,
    high speed", "pleural plaques? ex-shipyard worker")."""
    first, mark, rest = t.partition("?")
    return bool(mark) and "?" not in rest and bool(rest.strip()) and _terse(first.strip() + "?")


# "pna vs atx LLL?": a differential between named findings on this image, asked in a few words
_DIFFERENTIAL = re.compile(r"^\??[\w/'-]+(?: [\w/'-]+){0,2} (?:vs\.?|versus) [\w/'-]+(?: [\w/'-]+){0,3} ?\??$")


def _whole_study(t: str, route: Route, fams: set[str]) -> bool:
    """A question about the whole study that the rules read as a report and no cue family (``fams``) disputes."""
    return route.intent == "report" and not route.findings and fams <= {"report"} \
        and (_WHOLE_STUDY.match(_last_clause(t)) is not None or _WHOLE_STUDY.match(t) is not None)


_OOV = re.compile(
    r"(?:\bis there|\bare there|\bany(?:thing)?|\b(?:do|can) (?:you|we) (?:see|spot)|"
    r"\b(?:does )?(?:this|the) (?:film|x-?ray|cxr|study|image|radiograph) shows?|\bsigns? of|\bevidence of|\bcould (?:this|it) be|"
    r"\bcompatible with|\bconsistent with|\br/o|\brule out|\bconcern(?:ing)? for|\blooks? like|\bsuggestive of|"
    r"\bdoes (?:the )?(?:patient|pt|this|it) have|^(?:eval(?:uate)?|assess|check|look|screen) for)\s+"
    r"(?:(?:any|an?|the|some|signs? of|evidence of)\s+)*"
    r"['\"]?(?P<p>[a-z][\w'/ -]*?)\s*(?:\?|$|\b(?:on|in) (?:this|the) (?:image|film|x-?ray|cxr|study|radiograph)\b|"
    r"\bhere\b|\bpresent\b|,)"
)


_EXISTS = re.compile(r"^(?:(?:so|and|ok|also|pls|please),? )?(?:is there|are there|do you see|can you see|can you spot|"
                     r"(?:does )?(?:this|the) (?:film|x-?ray|cxr|study|image|radiograph) shows?|does (?:the )?"
                     r"(?:patient|pt) have|could (?:this|it) be|(?:any )?(?:signs?|evidence) of|r/o|rule out|"
                     r"(?:eval(?:uate)?|assess|check|look) for|concern(?:ing)? for|"
                     r"(?:what(?:'s| is) the |rate the )?(?:probability|likelihood|chance|odds) (?:of|for)|"
                     r"how likely is|grade the)(?:\b|(?<=/o))")
_GENERIC = re.compile(r"^(?:anything|something|any ?thing|abnormalit(?:y|ies)|(?:an? )?acute|(?:any )?(?:acute )?"
                      r"(?:process|findings?|problems?|issues?)|wrong|concerning|normal)\b")


# "any pneumomediastinum?": the whole turn is 'any' and a short noun phrase (not a request for opinions)
_ANY_THING = re.compile(r"^(?:and |also |so )?any (?!(?:thoughts?|ideas?|questions?|comments?|news|updates?|"
                        r"suggestions?|advice|help|chance|way|luck|time|more|other)\b)[a-z][\w'/-]*(?: [\w'/-]+){0,3} ?\??$")


_PLACE = re.compile(r"\b(?:in|at|on|of|near|behind) the\b")  # "an abnormality in the left apex" names a place


def _existence_target(t: str) -> bool:
    """A yes/no existence question whose object is one specific thing, not 'anything abnormal'; after clinical
    context too ("65M smoker, weight loss, any mass?", "MVA with chest trauma, widened mediastinum?")."""
    last = _last_clause(t)
    if last != t and _bare_finding(last):
        return True
    for x in dict.fromkeys((t, last)):
        if _EXISTS.search(x) or _ANY_THING.match(x):
            phrase = oov_phrase(x)
            if phrase and not _GENERIC.match(phrase):
                return True
    return False


def _unnamed(t: str) -> str | None:
    """The user's words for what no finding id names, when a terse question asks about it alone ("kyphosis?",
    "pneumoperitoneum post lap?", "tracheal deviation to the right?"), else None."""
    first = t.partition("?")[0].strip() + "?" if "?" in t else t
    spans = [(m.start(), m.end()) for m in UNNAMED.finditer(first)]
    if len(spans) != 1 or not _terse(re.sub(r"^(?:any|a|an|r/o|\?)\s+", lambda m: " " * len(m.group()), first),
                                      tuple(spans)):
        return None
    return first[spans[0][0] : spans[0][1]]


def _bare_finding(clause: str) -> bool:
    """The clause is one vocabulary finding asked as a question ("tumour?", "widened mediastinum?")."""
    if not clause.endswith("?"):
        return False
    words = re.sub(r"^(?:(?:a|an|any|some|r/o|\?)\s*)+", "", clause.rstrip("?! ")).strip()
    found = find_mentions(words)
    return len(found) == 1 and found[0].start == 0 and found[0].end == len(words)


def oov_phrase(t: str) -> str | None:
    """The asked-about words of a finding question ("is there free air under the diaphragm?" ->
    'free air under the diaphragm'), or None."""
    m = _OOV.search(t)
    if not m:
        return None
    phrase = m.group("p").strip(" -'")
    return phrase if 2 <= len(phrase) <= 80 else None


def route_semantic(text: str, *, has_image: bool, has_history: bool = False,
                   classifier: Callable[[], IntentClassifier | None] = default_classifier) -> Route:
    """Route one turn: rules first, the embedding classifier where the rules are unsure."""
    route = rules.route(text, has_image=has_image, has_history=has_history)
    t = clean_cut(text or "", rules._MAX_CHARS)
    fams = _families(t)  # the cue families, read once for every test below
    if not t or rule_decided(t, route, fams) or _whole_study(t, route, fams) or (
            route.intent == "finding_question" and route.findings and not fams and _DIFFERENTIAL.match(t)):
        return _with_phrase(route, t)
    unnamed = _unnamed(t) if route.intent in ("chat", "report") and not route.findings and not fams else None
    if unnamed is not None:
        # "kyphosis?", "free air under the diaphragm? post lap": a terse question about what no finding id names
        new = rules._make_route("finding_question", [], t, f"asks about '{unnamed}', which no finding id names; "
                                f"rules said: {route.reason}", has_image=has_image, method="rules")
        return new.model_copy(update={"phrase": unnamed})
    if route.intent in ("chat", "report") and not fams and _existence_target(t) and not rules.asks_comparison(t):
        # "is there dextrocardia?": a yes/no question about one named thing is a finding question,
        # whether or not the vocabulary knows the thing (high precision, no embedding needed)
        new = rules._make_route("finding_question", list(route.findings), t,
                                f"asks whether a specific finding is present; rules said: {route.reason}",
                                has_image=has_image, method="rules")
        return _with_phrase(new, t)
    clf = classifier()
    if clf is None:
        why = _STATE["error"] or "no classifier"
        return _with_phrase(route.model_copy(update={"reason": f"{route.reason} (rules only: embedder unavailable: "
                                                                f"{why})"}), t)
    scores = clf.scores(_asked_sentence(t))
    route = route.model_copy(update={"scores": {k: round(v, 4) for k, v in scores.items()}})
    best = max(scores, key=scores.__getitem__)
    lead = scores[best] - scores.get(route.intent, 0.0)
    if best == route.intent or scores[best] < MIN_SCORE or lead < MIN_MARGIN or (
            best == "chat" and route.intent == "finding_question" and route.findings and _OF_THIS.match(t)):
        return _with_phrase(route, t)
    reason = (f"semantic: the embedding classifier says {best} ({scores[best]:.2f} vs {route.intent} "
              f"{scores.get(route.intent, 0.0):.2f}); rules said: {route.reason}")
    new = rules._make_route(best, list(route.findings), t, reason, has_image=has_image, method="rules")
    new = _with_phrase(new.model_copy(update={"scores": route.scores}), t)
    if new.intent == "finding_question" and route.intent == "report" and not new.findings and (
            new.phrase is None or rules.asks_comparison(t)):
        # "Is this normal?", "any interval change?": the rules read a question about the whole study, and the
        # classifier's finding question would have nothing named to ask about; the whole read answers it.
        return _with_phrase(route, t)
    return new


# "any others?", "any more like it?": more of what the previous question asked about, no words of their own
_MORE = re.compile(r"^(?:others?|other ones?|more|another(?: one)?)\b")


def _with_phrase(route: Route, t: str) -> Route:
    """A finding question naming no vocabulary finding carries the asked-about words as its phrase."""
    if route.intent == "finding_question" and not route.findings and route.phrase is None:
        phrase = oov_phrase(t)
        if phrase and not (_GENERIC.match(phrase) and not _PLACE.search(phrase)) and not _MORE.match(phrase):
            return route.model_copy(update={"phrase": phrase,
                                            "reason": f"{route.reason}; out-of-vocabulary finding: '{phrase}'"})
    return route
