"""The one finding vocabulary every tool's output is mapped onto (its words live in knowledge/lexicon.toml)."""

from __future__ import annotations

from knowledge.lexicon import lexicon, term_key

_LEX = lexicon()

FINDINGS: tuple[str, ...] = tuple(_LEX.findings)
FINDING_SET = frozenset(FINDINGS)
DISPLAY_NAMES: dict[str, str] = {f: e.display for f, e in _LEX.findings.items()}

# Synonyms and abbreviations seen in real reports and label sets -> canonical id.
# Keys are compared after term_key() (lower case, separators collapsed) and a simple plural fold.
SYNONYMS: dict[str, str] = {term_key(s): f for f, e in _LEX.findings.items() for s in e.synonyms}

# External label sets (label -> id, in the set's own order): torchxrayvision's 18 pathology names
# (xrv.datasets.default_pathologies), the 14 CheXpert / MIMIC-CXR labels, NIH ChestX-ray14 (14 + "No Finding").
XRV_LABELS: dict[str, str] = _LEX.label_map("xrv")
CHEXPERT_LABELS: dict[str, str] = _LEX.label_map("chexpert")
NIH_LABELS: dict[str, str] = _LEX.label_map("nih")
# VinDr-CXR's 14 local labels (RadVLM's detection / grounding set); "Nodule/Mass" -> lung_lesion (lexicon.toml).
VINDR_LABELS: dict[str, str] = _LEX.label_map("vindr")

# Anatomical regions (Chest ImaGenome): locations to ground, never findings. id -> the model's region name.
REGIONS: dict[str, str] = {r: e.imagenome or e.display.lower() for r, e in _LEX.regions.items()}
_REGION_TERMS: dict[str, str] = {term_key(t): r for r, e in _LEX.regions.items()
                                 for t in (*e.synonyms, e.display, e.imagenome or "", r) if t}

# CheXpert's label hierarchy (Irvin et al. 2019, fig. 2): a child finding implies its parent. The labeler
# reports what the text says (it does not propagate); consumers that compare against a source labelling only
# the parent (e.g. a classifier's "Lung Lesion") can use this.
PARENTS: dict[str, str] = {f: e.parent for f, e in _LEX.findings.items() if e.parent}


def known_finding(finding: str) -> str:
    """``finding`` if it is a vocabulary id, else a ValueError naming it (a pydantic field validator for
    every typed finding field)."""
    if finding not in FINDING_SET:
        raise ValueError(f"unknown finding id {finding!r}; use knowledge.vocabulary.normalize()")
    return finding


def ancestors(finding: str) -> list[str]:
    """The chain of parents of `finding` (nearest first), e.g. nodule -> [lung_lesion, lung_opacity]."""
    out: list[str] = []
    while finding in PARENTS and PARENTS[finding] not in out:
        finding = PARENTS[finding]
        out.append(finding)
    return out


def _singular(key: str) -> str:
    words = key.split(" ")
    last = words[-1]
    if last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif last.endswith("es") and last[:-2].endswith(("ss", "x", "sh", "ch")):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith(("ss", "us", "is")):
        last = last[:-1]
    return " ".join([*words[:-1], last])


def normalize(name: str) -> str | None:
    """Map a label or phrase ("Effusion", "pleural effusions", "PTX") onto a canonical id, or None."""
    if not isinstance(name, str) or not name.strip():
        return None
    key = term_key(name)
    if key.replace(" ", "_") in FINDING_SET:
        return key.replace(" ", "_")
    for candidate in (key, _singular(key)):
        if candidate in SYNONYMS:
            return SYNONYMS[candidate]
        if candidate.replace(" ", "_") in FINDING_SET:
            return candidate.replace(" ", "_")
    return None


def display_name(finding: str) -> str:
    return DISPLAY_NAMES.get(finding, finding.replace("_", " ").capitalize())


def normalize_region(name: str) -> str | None:
    """Map a region name ("Right Hemidiaphragm", "right diaphragm", "SVC") onto a region id, or None."""
    if not isinstance(name, str) or not name.strip():
        return None
    return _REGION_TERMS.get(term_key(name))
