"""Load and validate knowledge/lexicon.toml: the one table of finding words (data, not code).

The vocabulary's ids, names and synonyms, the label-set maps, the labeler's report patterns and the
router's phrases all come from that file, so a new synonym or a new label set is one edit in one place,
and a mistake in it (an unknown id, a term claimed by two findings, a regex that does not compile) stops
the import with the file and line named instead of mislabelling reports later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import tomllib

DEFAULT_PATH = Path(__file__).with_name("lexicon.toml")

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_FRAGMENT = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")  # never a regex quantifier: those hold digits
_SNOMED_CODE = re.compile(r"^[1-9][0-9]{5,17}$")
_LOCAL_CODE = re.compile(r"^[A-Z0-9]{1,16}$")
_FINDING_KEYS = frozenset({"display", "parent", "synonyms", "router_phrases", "router_fuzzy", "labeler_mentions",
                           "labeler_hedged", "labeler_keywords", "snomed", "local_code", "note"})
_REGION_KEYS = frozenset({"display", "synonyms", "router_phrases", "imagenome", "snomed", "note"})
_TOP_KEYS = frozenset({"version", "fragments", "finding", "normal_statement", "labeler", "label_set", "region",
                       "combined_label", "router"})
_ROUTER_KEYS = frozenset({"outside_chest", "generic", "not_findings", "known_words", "structures", "survey",
                          "lesion_sites", "lesions", "unnamed_findings"})


class LexiconError(ValueError):
    """The lexicon file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Snomed:
    """A SNOMED CT concept (for DICOM SR / FHIR exports): code and its fully specified meaning."""

    code: str
    meaning: str


@dataclass(frozen=True)
class FindingEntry:
    """Everything the product says or reads about one finding."""

    id: str
    display: str
    parent: str | None = None
    synonyms: tuple[str, ...] = ()
    router_phrases: tuple[str, ...] = ()
    router_fuzzy: tuple[str, ...] = ()
    labeler_mentions: tuple[str, ...] = ()  # fragments already expanded
    labeler_hedged: tuple[str, ...] = ()
    labeler_keywords: tuple[str, ...] = ()
    snomed: Snomed | None = None
    local_code: str | None = None  # code value in the exports' local scheme (tools/interop/codes.py)


@dataclass(frozen=True)
class RegionEntry:
    """An anatomical region: a location to ground, never a finding."""

    id: str
    display: str
    synonyms: tuple[str, ...] = ()
    router_phrases: tuple[str, ...] = ()
    imagenome: str | None = None  # the Chest ImaGenome region name
    snomed: Snomed | None = None


@dataclass(frozen=True)
class NormalStatement:
    """A report sentence stating normality: absent for every finding in `findings`."""

    findings: tuple[str, ...]
    pattern: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class RouterWords:
    """What keeps the router from reading a user's words as the nearest finding (the [router] table)."""

    outside_chest: tuple[str, ...] = ()  # organs, bones, soft tissues: "bone lesion" is no lung lesion
    generic: tuple[str, ...] = ()  # finding ids whose words an outside_chest word can qualify away
    not_findings: tuple[str, ...] = ()  # regexes: named things outside the vocabulary ("pericardial effusion")
    known_words: tuple[str, ...] = ()  # real words close in spelling to a finding's word, never misspellings
    structures: tuple[str, ...] = ()  # regexes: a structure's name ("heart"), a finding only when asked about alone
    survey: tuple[str, ...] = ()  # regexes: what a systematic read lists ("lines, lungs, pleura, heart, bones")
    lesion_sites: tuple[str, ...] = ()  # regexes: outside_chest words whose lesions are other_lesion ("rib lesion")
    lesions: tuple[str, ...] = ()  # finding ids of a lesion word ("lesion", "mass"): other_lesion at such a site
    unnamed_findings: tuple[str, ...] = ()  # regexes: what a film may show that no id names ("free air", "kyphosis")


@dataclass(frozen=True)
class Lexicon:
    findings: dict[str, FindingEntry]  # in vocabulary order
    normal_statements: tuple[NormalStatement, ...]
    not_mentions: tuple[str, ...]
    label_sets: dict[str, dict[str, tuple[str, ...]]]  # set name -> label -> finding ids (in the set's order)
    regions: dict[str, RegionEntry]
    combined_labels: dict[str, str]  # label-set label mapped to more than one id -> why
    path: Path
    router: RouterWords = RouterWords()

    def label_map(self, name: str) -> dict[str, str]:
        """{label: finding id} of a label set, first id for a combined label (e.g. VinDr 'Nodule/Mass')."""
        return {label: ids[0] for label, ids in self.label_sets[name].items()}


def term_key(name: str) -> str:
    """How terms are compared: lower case, runs of spaces/underscores/hyphens/slashes -> one space."""
    return re.sub(r"[\s_\-/]+", " ", name.strip().lower())


class _Reader:
    """Validation with line numbers: tomllib gives none for values, so errors search the raw text."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, needle: str, header: str | None = None) -> int | None:
        start = 0
        if header is not None:
            start = next((i for i, ln in enumerate(self.lines) if ln.strip() == f"[{header}]"), 0)
        for i in range(start, len(self.lines)):
            if needle and needle in self.lines[i]:
                return i + 1
        return start + 1 if header is not None else None

    def fail(self, msg: str, needle: str = "", header: str | None = None) -> LexiconError:
        line = self.line_of(needle, header)
        return LexiconError(f"{self.path}:{line}: {msg}" if line else f"{self.path}: {msg}")

    def strings(self, table: dict[str, Any], key: str, header: str) -> tuple[str, ...]:
        val = table.get(key, [])
        if not isinstance(val, list) or not all(isinstance(v, str) and v.strip() for v in val):
            raise self.fail(f"[{header}] {key} must be a list of non-empty strings", f"{key} =", header)
        return tuple(val)

    def regex(self, pattern: str, header: str, fragments: dict[str, str] | None = None) -> str:
        expanded = pattern
        if fragments is not None:
            def sub(m: re.Match[str]) -> str:
                if m.group(1) not in fragments:
                    raise self.fail(f"[{header}] unknown fragment {{{m.group(1)}}}", m.group(0), header)
                return fragments[m.group(1)]
            expanded = _FRAGMENT.sub(sub, pattern)
        try:
            re.compile(expanded)
        except re.error as exc:
            raise self.fail(f"[{header}] bad regex {pattern!r}: {exc}", pattern, header) from None
        return expanded

    def snomed(self, table: dict[str, Any], header: str) -> Snomed | None:
        val = table.get("snomed")
        if val is None:
            return None
        if not (isinstance(val, dict) and set(val) == {"code", "meaning"} and isinstance(val["meaning"], str)
                and val["meaning"].strip() and _SNOMED_CODE.match(str(val["code"]))):
            raise self.fail(f"[{header}] snomed must be {{code = \"<SCTID digits>\", meaning = \"...\"}}",
                            "snomed", header)
        return Snomed(str(val["code"]), val["meaning"])

    def local_code(self, table: dict[str, Any], header: str) -> str | None:
        val = table.get("local_code")
        if val is not None and not (isinstance(val, str) and _LOCAL_CODE.match(val)):
            raise self.fail(f"[{header}] local_code must be 1-16 characters A-Z 0-9 (a DICOM SH code value)",
                            "local_code", header)
        return val


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """Parse and validate a lexicon file; any problem raises LexiconError naming file and line."""
    p = Path(path) if path is not None else DEFAULT_PATH
    text = p.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LexiconError(f"{p}: not valid TOML: {exc}") from None
    r = _Reader(p, text)
    for key in data:
        if key not in _TOP_KEYS:
            raise r.fail(f"unknown top-level key {key!r} (known: {', '.join(sorted(_TOP_KEYS))})", key)
    fragments = {k: str(v) for k, v in data.get("fragments", {}).items()}

    raw_findings: dict[str, Any] = data.get("finding", {})
    if not raw_findings:
        raise r.fail("no [finding.<id>] tables")
    findings: dict[str, FindingEntry] = {}
    for fid, t in raw_findings.items():
        h = f"finding.{fid}"
        if not _ID.match(fid):
            raise r.fail(f"finding id {fid!r} must be lower_snake_case", f"[{h}]")
        unknown = set(t) - _FINDING_KEYS
        if unknown:
            raise r.fail(f"[{h}] unknown key(s) {sorted(unknown)}", f"{sorted(unknown)[0]} =", h)
        if not isinstance(t.get("display"), str) or not t["display"].strip():
            raise r.fail(f"[{h}] needs display = \"...\"", "", h)
        mentions = tuple(r.regex(x, h, fragments) for x in r.strings(t, "labeler_mentions", h))
        hedged = tuple(r.regex(x, h, fragments) for x in r.strings(t, "labeler_hedged", h))
        keywords = r.strings(t, "labeler_keywords", h)
        if (mentions or hedged) and not keywords:
            raise r.fail(f"[{h}] labeler patterns need labeler_keywords (the prefilter)", "", h)
        findings[fid] = FindingEntry(
            id=fid, display=t["display"], parent=t.get("parent"),
            synonyms=r.strings(t, "synonyms", h),
            router_phrases=tuple(r.regex(x, h) for x in r.strings(t, "router_phrases", h)),
            router_fuzzy=r.strings(t, "router_fuzzy", h),
            labeler_mentions=mentions, labeler_hedged=hedged, labeler_keywords=keywords,
            snomed=r.snomed(t, h), local_code=r.local_code(t, h),
        )
    _check_parents(r, findings)
    _check_local_codes(r, findings)
    _check_unique(r, findings, "synonyms", term_key)
    _check_unique(r, findings, "router_fuzzy", str.lower)

    normals = []
    for i, t in enumerate(data.get("normal_statement", [])):
        h = "[normal_statement]"
        ids = r.strings(t, "findings", "normal_statement")
        for fid in ids:
            if fid not in findings:
                raise r.fail(f"normal_statement #{i + 1}: unknown finding id {fid!r}", f'"{fid}"', None)
        pat = t.get("pattern")
        if not isinstance(pat, str):
            raise r.fail(f"normal_statement #{i + 1} needs pattern = '...'", h)
        normals.append(NormalStatement(ids, r.regex(pat, "normal_statement", fragments),
                                       r.strings(t, "keywords", "normal_statement")))
    not_mentions = tuple(r.regex(x, "labeler") for x in r.strings(data.get("labeler", {}), "not_mentions", "labeler"))

    label_sets: dict[str, dict[str, tuple[str, ...]]] = {}
    for name, table in data.get("label_set", {}).items():
        h = f"label_set.{name}"
        out: dict[str, tuple[str, ...]] = {}
        for label, val in table.items():
            ids = (val,) if isinstance(val, str) else tuple(val) if isinstance(val, list) else ()
            if not ids or not all(isinstance(x, str) for x in ids):
                raise r.fail(f"[{h}] {label!r} must map to a finding id or a list of ids", f'"{label}"', h)
            for fid in ids:
                if fid not in findings:
                    raise r.fail(f"[{h}] {label!r} maps to unknown finding id {fid!r}", f'"{label}"', h)
            out[label] = ids
        label_sets[name] = out
    combined = {str(k): str(v) for k, v in data.get("combined_label", {}).items()}
    for key in combined:
        set_name, _, label = key.partition(":")
        if label not in label_sets.get(set_name, {}):
            raise r.fail(f"[combined_label] {key!r} names no label of a [label_set] (write \"<set>:<Label>\")",
                         f'"{key}"', "combined_label")
    for name, table in label_sets.items():
        for label, ids in table.items():
            if len(ids) > 1 and f"{name}:{label}" not in combined:
                raise r.fail(f"[label_set.{name}] {label!r} maps to {len(ids)} ids: explain it in "
                             f"[combined_label] \"{name}:{label}\" = \"...\"", f'"{label}"', f"label_set.{name}")

    regions: dict[str, RegionEntry] = {}
    for rid, t in data.get("region", {}).items():
        h = f"region.{rid}"
        if not _ID.match(rid):
            raise r.fail(f"region id {rid!r} must be lower_snake_case", f"[{h}]")
        if rid in findings:
            raise r.fail(f"region id {rid!r} is also a finding id: regions are locations, not findings", f"[{h}]")
        unknown = set(t) - _REGION_KEYS
        if unknown:
            raise r.fail(f"[{h}] unknown key(s) {sorted(unknown)}", f"{sorted(unknown)[0]} =", h)
        if not isinstance(t.get("display"), str) or not t["display"].strip():
            raise r.fail(f"[{h}] needs display = \"...\"", "", h)
        regions[rid] = RegionEntry(
            id=rid, display=t["display"], synonyms=r.strings(t, "synonyms", h),
            router_phrases=tuple(r.regex(x, h) for x in r.strings(t, "router_phrases", h)),
            imagenome=t.get("imagenome"), snomed=r.snomed(t, h),
        )
    _check_region_terms(r, findings, regions)
    return Lexicon(findings=findings, normal_statements=tuple(normals), not_mentions=not_mentions,
                   label_sets=label_sets, regions=regions, combined_labels=combined, path=p,
                   router=_router_words(r, data.get("router", {}), findings))


def _router_words(r: _Reader, t: dict[str, Any], findings: dict[str, FindingEntry]) -> RouterWords:
    unknown = set(t) - _ROUTER_KEYS
    if unknown:
        raise r.fail(f"[router] unknown key(s) {sorted(unknown)} (known: {', '.join(sorted(_ROUTER_KEYS))})",
                     f"{sorted(unknown)[0]} =", "router")
    generic = r.strings(t, "generic", "router")
    lesions = r.strings(t, "lesions", "router")
    for key, ids in (("generic", generic), ("lesions", lesions)):
        for fid in ids:
            if fid not in findings:
                raise r.fail(f"[router] {key} names unknown finding id {fid!r}", f"'{fid}'", "router")
    return RouterWords(
        outside_chest=tuple(r.regex(x, "router") for x in r.strings(t, "outside_chest", "router")),
        generic=generic,
        not_findings=tuple(r.regex(x, "router") for x in r.strings(t, "not_findings", "router")),
        known_words=tuple(w.lower() for w in r.strings(t, "known_words", "router")),
        structures=tuple(r.regex(x, "router") for x in r.strings(t, "structures", "router")),
        survey=tuple(r.regex(x, "router") for x in r.strings(t, "survey", "router")),
        lesion_sites=tuple(r.regex(x, "router") for x in r.strings(t, "lesion_sites", "router")),
        lesions=lesions,
        unnamed_findings=tuple(r.regex(x, "router") for x in r.strings(t, "unnamed_findings", "router")),
    )


def _check_parents(r: _Reader, findings: dict[str, FindingEntry]) -> None:
    for fid, e in findings.items():
        if e.parent is None:
            continue
        if e.parent not in findings:
            raise r.fail(f"[finding.{fid}] parent {e.parent!r} is not a finding id", "parent", f"finding.{fid}")
        seen, cur = {fid}, e.parent
        while cur is not None:
            if cur in seen:
                raise r.fail(f"[finding.{fid}] parent chain loops back to {cur!r}", "parent", f"finding.{fid}")
            seen.add(cur)
            cur = findings[cur].parent


def _check_unique(r: _Reader, findings: dict[str, FindingEntry], column: str, key: Any) -> None:
    owner: dict[str, str] = {}
    for fid, e in findings.items():
        for term in getattr(e, column):
            k = key(term)
            if k in owner and owner[k] != fid:
                raise r.fail(f"{column} term {term!r} maps to two findings: {owner[k]!r} and {fid!r}",
                             f"'{term}'", f"finding.{fid}")
            owner[k] = fid


def _check_local_codes(r: _Reader, findings: dict[str, FindingEntry]) -> None:
    owner: dict[str, str] = {}
    for fid, e in findings.items():
        if e.local_code and owner.setdefault(e.local_code, fid) != fid:
            raise r.fail(f"local_code {e.local_code!r} is used by {owner[e.local_code]!r} and {fid!r}",
                         "local_code", f"finding.{fid}")


def _check_region_terms(r: _Reader, findings: dict[str, FindingEntry], regions: dict[str, RegionEntry]) -> None:
    finding_terms = {term_key(s): f for f, e in findings.items() for s in e.synonyms}
    owner: dict[str, str] = {}
    for rid, e in regions.items():
        for term in e.synonyms:
            k = term_key(term)
            if k in finding_terms:
                raise r.fail(f"region term {term!r} is already a synonym of finding {finding_terms[k]!r}",
                             f"'{term}'", f"region.{rid}")
            if k in owner and owner[k] != rid:
                raise r.fail(f"region term {term!r} maps to two regions: {owner[k]!r} and {rid!r}",
                             f"'{term}'", f"region.{rid}")
            owner[k] = rid


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """The product's lexicon (knowledge/lexicon.toml), loaded once."""
    return load_lexicon()
