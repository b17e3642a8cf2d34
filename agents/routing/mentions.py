"""Which findings a user's turn names: the lexicon's router phrases, the shared vocabulary's synonyms
(every 1-4 word n-gram through ``normalize()``) and spelling-tolerant long words, longest match first.

What is named outside the vocabulary stays the user's words, never the nearest finding: a generic finding word
qualified by an organ or bone outside the chest ("lytic bone lesion", "liver mass", "nodule in the breast"), a
named thing whose words contain a finding's ("pericardial effusion", "subcutaneous emphysema"), and a real
word a letter or two from a finding's ("pneumonitis") are no finding mention (the lexicon's [router] table).
A structure's bare name ("heart", "lines") names its finding only where the turn asks about it, not in a list
of structures nor in a request for the whole read (``extract_findings(structures=False)``).

Kept apart from the intent rules (agents/routing/rules.py) because the LLM router and the graph's follow-up
handling use it on its own.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

from knowledge.lexicon import lexicon
from knowledge.vocabulary import ancestors, normalize

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
_FUZZY_MIN_LEN = 5  # a five-letter word can only reach the cut-off by one missing letter ("nodul")

_ROUTER = lexicon().router
_KNOWN_WORDS = frozenset(_ROUTER.known_words)
_GENERIC = frozenset(_ROUTER.generic)
_OUTSIDE = "|".join(_ROUTER.outside_chest) or r"(?!)"
# An outside-chest word right before a generic finding word or one word before it ("liver mass", "lytic bone
# lesion"; not across a conjunction or a lung word: "liver and lung masses" names a lung mass) ...
_OUTSIDE_BEFORE = re.compile(rf"(?<![\w-])(?:{_OUTSIDE})(?:[\s-]+(?!(?:and|or|with|without|lungs?|pulmonary)\b)[\w-]+)?"
                             r"[\s-]+$")
# ... or right after it through a preposition ("lesion of the clavicle", "nodule in the left breast").
_OUTSIDE_AFTER = re.compile(r"^\s+(?:of|in|on|within|involving)\s+(?:(?:the|a|an|his|her|left|right|l|r|"
                            rf"upper|lower|mid|proximal|distal)\s+){{0,3}}(?:{_OUTSIDE})(?![\w-])")
# A structure's bare name ("heart", "mediastinum") and what a systematic read lists ("lines, lungs, pleura").
_STRUCTURE = re.compile("|".join(_ROUTER.structures) or "(?!)")
_SURVEY_ITEM = re.compile(rf"(?<![\w-])(?:{'|'.join(_ROUTER.survey) or '(?!)'})(?![\w-])")
_LIST_SEP = re.compile(r"\s*(?:[,/&+:;]|\band\b|\bor\b)\s*(?:(?:and|the|his|her)\s+)?")
_DEVICES = re.compile(r"^(?:line|tube|device)$")
_NOT_FINDINGS = re.compile(rf"(?<![\w-])(?:{'|'.join((*_ROUTER.not_findings, *_ROUTER.unnamed_findings)) or '(?!)'})"
                           r"(?![\w-])")
# What a film may show that no id names ("kyphosis", "free air under the diaphragm"): the user's words, carried
UNNAMED = re.compile(rf"(?<![\w-])(?:{'|'.join(_ROUTER.unnamed_findings) or '(?!)'})(?![\w-])")
# A lesion word at a bone or the chest wall names the other lesion ("lytic lesion in the rib": other_lesion).
_LESIONS = frozenset(_ROUTER.lesions)
_LESION_SITE = re.compile(rf"(?<![\w-])(?:{'|'.join(_ROUTER.lesion_sites) or '(?!)'})(?![\w-])")


@dataclass(frozen=True)
class _Mention:
    start: int
    end: int
    finding: str


# Slips of a few common words, each the length of the word meant, so spans stay where they were ("pls reed teh film")
_SLIPS = {"reed": "read", "teh": "the", "ani": "any", "hte": "the", "adn": "and", "nad": "and", "waht": "what"}
_SLIP = re.compile(r"\b(?:" + "|".join(_SLIPS) + r")\b")


class _Cleaned(str):
    """Text that has been through ``_clean``. Cleaning it again returns it unchanged: the slip repairs read
    capitals the cleaned text no longer has ("Pt NAD, any ptx?" keeps "nad", which a second pass would read
    as a slip for "and"), and every reader of a turn is handed the one cleaned text."""

    __slots__ = ()


def _clean(text: str) -> str:
    if isinstance(text, _Cleaned):
        return text
    s = re.sub(r"\s+", " ", text.replace("\u2019", "'").replace("\u2018", "'")).strip()
    t = s.lower()
    same = len(s) == len(t)  # lower() keeps every position (it may not, for a few non-ASCII letters)

    def slip(m: re.Match[str]) -> str:
        # "NAD" in capitals, or "nad?" ending the turn, is the abbreviation (no abnormality detected), not "and"
        if m.group() == "nad" and ((same and s[m.start() : m.end()] == "NAD") or not t[m.end() :].strip(" ?.!")):
            return m.group()
        return _SLIPS[m.group()]

    return _Cleaned(_SLIP.sub(slip, t))


def clean_cut(text: str, limit: int) -> str:
    """The cleaned ``text``, its first ``limit`` characters, still known to be clean."""
    return _Cleaned(_clean(text)[:limit])


def outside_spans(text: str) -> list[tuple[int, int]]:
    """Spans of the cleaned ``text`` that name something outside the vocabulary though they hold a finding's
    words: a not-finding phrase, or a generic finding word with its outside-chest qualifier (not a lesion at a
    bone or the chest wall: that is the other lesion)."""
    t = _clean(text)
    return _outside(t, _exact_mentions(t))[0]


def _outside(t: str, mentions: list[_Mention]) -> tuple[list[tuple[int, int]], list[_Mention]]:
    """(spans outside the vocabulary, other-lesion mentions): a generic finding word qualified by an organ or bone
    outside the chest is the one or, a lesion word at a bone or the chest wall, the other."""
    spans = [(m.start(), m.end()) for m in _NOT_FINDINGS.finditer(t)]
    sited: list[_Mention] = []
    for m in mentions:
        if m.finding not in _GENERIC:
            continue
        before = _OUTSIDE_BEFORE.search(t[max(0, m.start - 60) : m.start])
        after = _OUTSIDE_AFTER.match(t[m.end :])
        if before or after:
            start = m.start - (len(before.group(0)) if before else 0)
            end = m.end + (after.end() if after else 0)
            if m.finding in _LESIONS and _LESION_SITE.search(t[start:m.start] + " " + t[m.end:end]):
                sited.append(_Mention(start, end, "other_lesion"))
            else:
                spans.append((start, end))
    return spans, sited


def _exact_mentions(t: str) -> list[_Mention]:
    """Every router-phrase and vocabulary-synonym match in the cleaned ``t`` (overlapping, not yet chosen)."""
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
    return cands


def find_mentions(text: str, *, fuzzy: bool = True) -> list[_Mention]:
    """Every non-overlapping finding mention in ``text`` (lower-cased), longest match first, none inside a
    span named outside the vocabulary (``outside_spans``); ``fuzzy``: misspelt long words count too, never a
    known real word."""
    return list(_mentions(_clean(text), fuzzy))


@lru_cache(maxsize=64)
def _mentions(t: str, fuzzy: bool) -> tuple[_Mention, ...]:
    """``find_mentions`` of the cleaned ``t``, kept for the few texts of the last turns: routing one turn reads
    the same words several times (the finding, the cue families, the terse-question test, the classifier's text)."""
    exact = _exact_mentions(t)
    if fuzzy:  # misspelt words first, so that "bone lesoin" is qualified as "bone lesion" is
        covered = [(c.start, c.end) for c in exact] + [(m.start(), m.end()) for m in _NOT_FINDINGS.finditer(t)]
        for m in _WORD.finditer(t):
            start, end, word = m.start(), m.end(), m.group()
            if len(word) < _FUZZY_MIN_LEN or word in _KNOWN_WORDS or any(a <= start and end <= b for a, b in covered):
                continue
            fid = _fuzzy_finding(word)
            if fid is not None:
                exact.append(_Mention(start, end, fid))
    outside, sited = _outside(t, exact)
    cands = [c for c in exact if not any(a < c.end and c.start < b for a, b in outside)] + sited
    cands.sort(key=lambda m: (-(m.end - m.start), m.start))
    chosen: list[_Mention] = []
    for c in cands:
        if all(c.end <= o.start or c.start >= o.end for o in chosen):
            chosen.append(c)
    chosen.sort(key=lambda m: m.start)
    return tuple(chosen)


@lru_cache(maxsize=4096)
def _fuzzy_finding(word: str) -> str | None:
    """Spelling-tolerant match of one word against the lexicon (cached: difflib scans it all); two swapped
    neighbouring letters ("hernai", "nodlue", "effsuion") are one slip, though difflib counts them as two."""
    close = difflib.get_close_matches(word, _FUZZY_LEXICON, n=1, cutoff=_FUZZY_CUTOFF)
    if close:
        return _FUZZY_LEXICON[close[0]]
    if "f" in word and (fid := _FUZZY_BY_SOUND.get(_sound(word))) is not None:
        return fid  # "emfysema": f for ph, a slip of sound, not of letters
    if len(word) >= _SWAP_MIN_LEN:
        for cand, fid in _FUZZY_LEXICON.items():
            if _one_swap(word, cand):
                return fid
    return None


_SWAP_MIN_LEN = 6  # "nodlue" (nodule), "hernai" (hernia); shorter words collide


def _sound(word: str) -> str:
    """A word spelt as it sounds where spellings of the same sound differ: ph is f."""
    return word.replace("ph", "f")


_FUZZY_BY_SOUND: dict[str, str] = {_sound(w): fid for w, fid in _FUZZY_LEXICON.items() if "ph" in w}


def _one_swap(a: str, b: str) -> bool:
    """``a`` is ``b`` with two neighbouring letters swapped."""
    if len(a) != len(b) or a == b:
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def fuzzy_readings(text: str, *, floor: float = 0.8) -> list[tuple[str, str, float]]:
    """(word, finding, similarity), best first and one per finding, for the long word outside every exact
    mention that comes closest to the lexicon's router_fuzzy words (within ``floor``); empty if none does.
    The router asks back when two findings are about as close, or the best falls short of the cut-off."""
    t = _clean(text)
    exact = [(m.start, m.end) for m in find_mentions(t, fuzzy=False)] + outside_spans(t)
    best: list[tuple[str, str, float]] = []
    for m in _WORD.finditer(t):
        word = m.group()
        if (len(word) < _FUZZY_MIN_LEN or word in _KNOWN_WORDS
                or any(a <= m.start() and m.end() <= b for a, b in exact)):
            continue
        out: dict[str, float] = {}
        for cand in difflib.get_close_matches(word, _FUZZY_LEXICON, n=8, cutoff=floor):
            fid = _FUZZY_LEXICON[cand]
            out[fid] = max(out.get(fid, 0.0), difflib.SequenceMatcher(None, word, cand).ratio())
        ranked = sorted(((word, f, r) for f, r in out.items()), key=lambda x: -x[2])
        if ranked and (not best or ranked[0][2] > best[0][2]):
            best = ranked
    return best


# Words right before the finding a question is about: "post line placement - any pneumothorax?"
# asks about the pneumothorax, not the line.
_ASKED = re.compile(
    r"(?:\bany|\bno|\br/o|\brule out|\bis there(?: an?| any)?|\bare there(?: any)?|\b(?:is|are) the(?: \w+)?|\bresidual|"
    r"\bstill (?:have|has|show|shows)(?: an?| any| some)?|"
    r"\bevidence (?:of|for)|"
    r"\bsigns? of|\bconcern(?:ing)? for|\beval(?:uate)? for|\bassess for|\bcheck for|\blook for|"
    r"\bsee (?:a|an|any)|\bworried about|\bsuspect(?:ed)?|\b(?:be|represent)(?: an?)?)\s+(?:\w+\s+)?$"
)


def _literal(term: str) -> str:
    """A lexicon term as a regex: spaces, hyphens and underscores interchangeable."""
    return r"[\s_-]+".join(re.escape(w) for w in re.split(r"[\s_-]+", term.strip().lower()) if w)


def _sided(term: str) -> str:
    """A region term as a regex whose side may be shortened ("R CP angle", "lt hemidiaphragm")."""
    rx = _literal(term)
    for side, short in (("right", "r|rt"), ("left", "l|lt")):
        if rx.startswith(side + r"[\s_-]+"):
            return f"(?:{side}|{short}\\.?)" + rx[len(side):]
    return rx


# Anatomical regions (lexicon [region.*]): their router phrases, synonyms and Chest ImaGenome name.
_REGION_RES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?<![\w-])(?:" + "|".join(sorted({*e.router_phrases, *(_sided(x) for x in (*e.synonyms,
     e.imagenome or "") if x)}, key=len, reverse=True)) + r")(?![\w-])"), rid)
    for rid, e in lexicon().regions.items()
]


def find_regions(text: str) -> list[_Mention]:
    """Every non-overlapping anatomical-region mention in ``text`` (``finding`` holds the region id),
    longest first, and none that lies inside a longer finding mention ("enlarged heart" is a finding,
    "the heart" a region)."""
    t = _clean(text)
    cands = [_Mention(m.start(), m.end(), rid) for rx, rid in _REGION_RES for m in rx.finditer(t)]
    findings = find_mentions(t)
    cands = [r for r in cands if not any(f.start <= r.start and r.end <= f.end and f.end - f.start > r.end - r.start
                                         for f in findings)]
    cands.sort(key=lambda m: (-(m.end - m.start), m.start))
    chosen: list[_Mention] = []
    for c in cands:
        if all(c.end <= o.start or c.start >= o.end for o in chosen):
            chosen.append(c)
    return sorted(chosen, key=lambda m: m.start)


def is_survey(text: str) -> bool:
    """Whether the turn lists structures as a systematic read goes through them ("lines, lungs, pleura, heart,
    bones", "heart and lungs ok?"): two different ones side by side in a list (lines, tubes and devices count
    as one; "tube in the trachea" is no list), so none of them is the one thing asked about."""
    t = _clean(text)
    items = list(_SURVEY_ITEM.finditer(t))
    for a, b in zip(items, items[1:], strict=False):
        if _key(a.group()) != _key(b.group()) and _LIST_SEP.fullmatch(t[a.end() : b.start()]):
            return True
    return False


def _key(item: str) -> str:
    return _DEVICES.sub("devices", re.sub(r"s$", "", item))


def _bare(t: str, m: _Mention, *, survey: bool) -> bool:
    """The mention is a structure's bare name (or, in a survey, any item the survey lists)."""
    words = t[m.start : m.end]
    parts = [p for p in re.split(r"\s*(?:,|/|&|\band\b)\s*", words) if p]  # "lines and tubes", "tubes/lines"
    return bool(_STRUCTURE.fullmatch(words) or (survey and all(_SURVEY_ITEM.fullmatch(p) for p in parts)))


# A mention that asks by itself: the start of a short clause ending in "?" ("effusion? also check ...", "nodule in
# RUL? any mass elsewhere?", "s/p CVC - ptx?"; in "chf vs pna?" the first), or a device's position ("ETT
# position and any ptx?").
# "new PICC - position + ptx?", "the ETT depth and whether there is any pneumothorax"
_ASKED_AFTER = re.compile(r"^\s*(?:-+\s*|:\s*)?(?:position|positioning|placement|tip|depth|level)\b")
_OWN_QUESTION = re.compile(r"^(?:(?!\s-+\s)[^?.!,;]){0,30}\?")  # "nodule in RUL? any mass elsewhere?"
_CLAUSE_START = re.compile(r"(?:^|[.?!,;:]\s*|\s-+\s*)(?:(?:and|also|so|ok)\s+)?$")


# A finding that opens the turn, joined to a question that follows ("Effusion on the right, and is the PICC still in the
# SVC?", "Pneumothorax after the line, or any new effusion?"): the first part of a multi-part question
_LEAD_BEFORE = re.compile(r"^(?:(?:any|a|an|the|new|small|large|big|tiny|r/o|rule out|left|right|l|r|bilateral|residual|"
                          r"\?)\s+)*$")
_COORDINATED = re.compile(r"^[^?.!;,]{0,40},?\s+(?:and|or|also|plus|but)\s+(?:also\s+)?(?:is|are|was|were|does|do|has|have|"
                          r"any|whether|what|how|where|new)\b")
# A finding named as the occasion, not as what is asked: "any change since the drain went in?", "pneumothorax after the
# line?"
_OCCASION_BEFORE = re.compile(r"\b(?:since|after|post|following|s/p|before)\s+(?:(?:the|a|an|his|her|their|its|this|that|"
                              r"new|recent|right|left|r|l|chest|central)\s+){0,3}$")


def _occasion(t: str, m: _Mention) -> bool:
    return _OCCASION_BEFORE.search(t[max(0, m.start - 50) : m.start]) is not None


def occasion_only(text: str) -> bool:
    """Every finding the turn names is named as an occasion ("any change since the drain went in?")."""
    t = _clean(text)
    found = find_mentions(t)
    return bool(found) and all(_occasion(t, m) for m in found)


def _asked(t: str, m: _Mention) -> bool:
    before, after = t[max(0, m.start - 40) : m.start], t[m.end :]
    if _occasion(t, m):
        return False
    return bool(_ASKED.search(before) or _ASKED_AFTER.match(after)
                or (_OWN_QUESTION.match(after) and _CLAUSE_START.search(before))
                or (_LEAD_BEFORE.match(t[: m.start]) and _COORDINATED.match(after)))


def _head_of_list(t: str, mentions: list[_Mention], m: _Mention) -> _Mention:
    """The first finding of the list whose last item ``m`` is: "trauma: rib fx, PTX, wide mediastinum?" asks
    about all three, the first named first. Each earlier item is joined by a bare list separator and starts a
    clause itself (not "hx of CHF, effusion?": CHF there is history), and the list has three items at least
    ("CHF, effusion?" may be history, then the question)."""
    last = i = mentions.index(m)
    while i > 0:
        prev = mentions[i - 1]
        if not (_LIST_SEP.fullmatch(t[prev.end : mentions[i].start]) and _CLAUSE_START.search(t[: prev.start])):
            break
        i -= 1
    return mentions[i] if last - i >= 2 else m


# "Is that opacity consolidation or atelectasis?", "is the opacity in the RLL consolidation?": a generic finding as
# the subject, then the more specific one it is asked to be (no list between them: "any opacity or consolidation?"
# asks about both, the first first)
_SUBJECT = re.compile(r"\b(?:is|are|was|were|does|do|could|can|might|would|should) (?:the|that|this|these|those) "
                      r"(?:[\w-]+ ){0,2}$")
_JOINS = re.compile(r"[,;/+?&]|\b(?:and|or|with|plus|vs|versus|also|but|then)\b")


def _characterised(t: str, mentions: list[_Mention]) -> _Mention | None:
    """The specific finding a generic one, the turn's subject, is asked to be (see ``_SUBJECT``), or None."""
    if len(mentions) < 2:
        return None
    a, b = mentions[0], mentions[1]
    if a.finding in ancestors(b.finding) and _SUBJECT.search(t[max(0, a.start - 40) : a.start]) \
            and not _JOINS.search(t[a.end : b.start]):
        return b
    return None


# Clinical context, then the question: "we just put in a chest drain, has the pneumothorax resolved?"
CLAUSE_SPLIT = re.compile(r"[,;.:]\s+|\s-+\s")  # between clauses of context and the question
_REQUEST = re.compile(r"(?:i(?:'m| am) (?:mainly |mostly |most |really )?(?:interested|worried|concerned)|can you|"
                      r"could you|please|pls|check|look|tell me|my question|i (?:want|need|would like) to know)\b")
_QUESTION_START = re.compile(r"^(?:and |so |but |or )?(?:is|are|was|were|do|does|did|can|could|would|will|has|have|any|"
                             r"where|what|which|how|why|should|r/o|rule out|eval|evaluate|check)\b")


def _question_clause(t: str, mentions: list[_Mention]) -> list[_Mention]:
    """The mentions of the last clause when it alone is the question (ends in "?") and the clauses before it are
    statements (context)."""
    seps = list(CLAUSE_SPLIT.finditer(t))
    if not seps:
        return []
    start = seps[-1].end()
    # the question, or a request after sentences of context ("... with CHF. I'm mainly interested in whether ...")
    if not (t.rstrip().endswith("?") or (seps[-1].group().startswith(".") and _REQUEST.match(t[start:]))):
        return []
    before = [c.strip() for c in CLAUSE_SPLIT.split(t[:start]) if c.strip()]
    if any("?" in c or _QUESTION_START.match(c) for c in before):
        return []
    return [m for m in mentions if m.start >= start][:1]


def extract_findings(text: str, *, allow_no_finding: bool = False,
                     exclude: tuple[tuple[int, int], ...] = (), structures: bool = True) -> list[str]:
    """Canonical finding ids named in ``text``: the first one a question asks about ("... any pneumothorax?",
    "effusion? ..."), then the rest in order of appearance, without duplicates. Mentions inside an
    ``exclude`` span (of the cleaned text; e.g. a region's name) do not count; nor a structure's bare name or
    a survey's item ("lines") when ``structures`` is False (a request for the whole read), nor any item of a
    survey (``is_survey``)."""
    t = _clean(text)
    survey = is_survey(t)
    mentions = [m for m in find_mentions(t) if not any(a <= m.start and m.end <= b for a, b in exclude)
                and not ((survey or not structures) and _bare(t, m, survey=survey or not structures))]
    specific = _characterised(t, mentions)
    asked = ([specific] if specific else [_head_of_list(t, mentions, m) for m in mentions if _asked(t, m)]) \
        or _question_clause(t, mentions)
    out: list[str] = []
    # what is asked, then what is named, then what is named only as the occasion
    for m in asked[:1] + [m for m in mentions if not _occasion(t, m)] + mentions:
        if m.finding == "no_finding" and not allow_no_finding:
            continue
        if m.finding not in out:
            out.append(m.finding)
    return out
