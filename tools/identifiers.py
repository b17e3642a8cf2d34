"""Text that looks like a patient identifier: names, record numbers, dates of birth, phone, e-mail, SSN.

Why patterns: no maintained de-identification library installs here with what it needs offline
(presidio-analyzer needs a spaCy NER model, philter needs NLTK's tagger data; neither comes from
PyPI), so the product uses documented patterns, measured on a labelled sample (README). They look
for what a name or number is *introduced by* (a title, a field label, DICOM's ``LAST^FIRST``) rather
than guessing whether a capitalised word is a name, so radiology words are not caught: the markers
on a film (L, R, PORTABLE, SUPINE, AP, a time stamp) and report text ("Right lower lobe opacity")
pass. Used for a prior-report corpus before indexing (tools/retrieval/corpus.py) and for OCR text
found on an image (tools/ingestion/redact.py).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

REPLACEMENT = "___"  # MIMIC-CXR's own mark for removed text: the embedder has seen it
_WORD = r"(?!X{2,}\b)[A-Z][A-Za-z'\-]+"  # XXXX: a name already removed (IU X-ray's mark)
_DATE = (r"(?:\d{1,4}[/\-.]\d{1,2}[/\-.]\d{1,4}|\d{1,2}\s+[A-Za-z]{3,9}\.?,?\s+\d{4}"
         r"|[A-Za-z]{3,9}\.?\s+\d{1,2},?\s+\d{4}|\d{8})")
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("birth_date", re.compile(rf"\b(?i:DOB|D\.O\.B\.?|date\s+of\s+birth|birth\s*date|born(?:\s+on)?)\s*[:=]?\s*{_DATE}")),
    ("name", re.compile(rf"\b(?i:dr|mr|mrs|ms|miss|mx|prof|doctor)\.?\s+{_WORD}(?:\s+{_WORD})?")),
    ("name", re.compile(
        rf"\b(?i:patient(?:'s)?\s+name|patient|pt|name|surname|referring(?:\s+physician)?|physician|attending|"
        rf"radiologist|technologist|signed\s+by|dictated\s+by|read\s+by)\s*[:=]\s*{_WORD}(?:[ ,^]+{_WORD}){{0,2}}")),
    ("name", re.compile(rf"\b{_WORD}\^{_WORD}(?:\^{_WORD})?")),  # DICOM person name LAST^FIRST
    ("record_number", re.compile(
        r"\b(?i:MRN|MR\s?#|MR\s?no\.?|medical\s+record(?:\s+number|\s+no\.?)?|patient\s+id|PID|"
        r"hospital\s+(?:number|no\.?)|accession(?:\s+number|\s+no\.?|\s*#)?|acc\s?#|NHS(?:\s+number|\s+no\.?)?|"
        r"ID)\s*[:#=]?\s*[A-Z0-9][A-Z0-9\-]{3,}")),
    ("record_number", re.compile(r"(?<![\d.,])\d{7,}(?![\d.,]*\d)")),
    ("ssn", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("phone", re.compile(r"(?<![\w.])(?:\+\d{1,3}[\s\-.]?)?\(?\d{3}\)?[\s\-.]\d{3}[\s\-.]\d{4}\b")),
    ("email", re.compile(r"\b[\w.+\-]+@[\w\-]+\.[\w.\-]+\b")),
)
KINDS = tuple(dict.fromkeys(kind for kind, _ in _PATTERNS))


@dataclass(frozen=True)
class Hit:
    kind: str
    start: int
    end: int


def _is_timestamp(digits: str) -> bool:
    """YYYYMMDD[hhmm[ss]]: a film's time stamp or a study date, not a record number."""
    if len(digits) not in (8, 12, 14) or digits[:2] not in ("19", "20"):
        return False
    month, day = int(digits[4:6]), int(digits[6:8])
    return 1 <= month <= 12 and 1 <= day <= 31


def find_identifiers(text: str) -> list[Hit]:
    """Every span of ``text`` that looks like an identifier, overlapping spans merged (first kind kept)."""
    hits: list[Hit] = []
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            if kind == "record_number" and m.group().isdigit() and _is_timestamp(m.group()):
                continue
            hits.append(Hit(kind, m.start(), m.end()))
    return list(_merged(sorted(hits, key=lambda h: (h.start, -h.end))))


def _merged(hits: list[Hit]) -> Iterator[Hit]:
    current: Hit | None = None
    for h in hits:
        if current is not None and h.start < current.end:
            current = Hit(current.kind, current.start, max(current.end, h.end))
            continue
        if current is not None:
            yield current
        current = h
    if current is not None:
        yield current


def redact_identifiers(text: str) -> tuple[str, Counter[str]]:
    """``text`` with each identifier-like span replaced by ``___``, and how many of each kind were found."""
    hits = find_identifiers(text)
    if not hits:
        return text, Counter()
    out, last = [], 0
    for h in hits:
        out += [text[last : h.start], REPLACEMENT]
        last = h.end
    out.append(text[last:])
    return "".join(out), Counter(h.kind for h in hits)
