"""Read multiple-choice benchmarks from the files their publishers distribute (the user downloads them).

- **ChestAgentBench** (``wanglab/chest-agent-bench`` on Hugging Face): ``metadata.jsonl`` (one question
  a line: ``question`` with its lettered options inline, ``answer`` a letter, ``case_id``,
  ``question_id``, ``full_question_id``, ``categories`` comma-separated, ``images`` paths relative to the
  folder, ``image_source_urls``, ``explanation``, ``sections``, ``type``) beside ``figures/``.
- **ReXVQA** (``rajpurkarlab/ReXVQA``): a JSON object of questions keyed by id (e.g.
  ``metadata/test_vqa_data.json``): ``question``, ``options`` ("A. ..."), ``correct_answer``,
  ``ImagePath`` (relative paths into ReXGradient-160K's ``deid_png``), ``ImageModality``,
  ``task_name``, ``category``, ``study_id``, ``Indication`` and patient fields that are never read.

**Figures that are not chest radiographs are skipped, counted and kept in the denominator** (the
rule, ``skip_reason``): a ReXVQA image whose ``ImageModality`` is not a radiograph (CR, DX); a
ChestAgentBench question whose text names another modality (CT, MRI, ultrasound, PET, angiography,
...), or any of whose figures or whose case is in the curated list ``non_cxr_chestagentbench.txt``
shipped beside this module (or a list the user passes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Bench = Literal["chestagentbench", "rexvqa"]
BENCHES: tuple[str, ...] = ("chestagentbench", "rexvqa")
CURATED_NON_CXR = Path(__file__).with_name("non_cxr_chestagentbench.txt")
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})

_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[).:]\s+(.+?)\s*$")
_INLINE_OPTION = re.compile(r"(?:^|(?<=\s))\(?([A-J])\)\s+")
_OTHER_MODALITY = re.compile(
    r"\b(CT|CTA|HRCT|computed tomograph\w*|MRI|MR imaging|magnetic resonance|ultrasound|sonograph\w*|"
    r"echocardiogra\w*|PET|angiogra\w*|fluoroscop\w*|mammogra\w*|scintigraph\w*|histolog\w*|patholog\w* "
    r"(slide|specimen)|biopsy specimen)\b")
_ANSWER = re.compile(r"^\s*\(?([A-J])\)?\s*(?:[).:].*)?$", re.S)


class BenchFormatError(ValueError):
    """A benchmark file that does not have the published layout (names the file, line and field)."""


@dataclass(frozen=True)
class BenchItem:
    """One question as the runner needs it; ``skip`` says why it is not answered (None: it is)."""

    id: str
    case_id: str
    question: str
    options: dict[str, str]
    answer: str
    images: tuple[Path, ...]
    categories: tuple[str, ...] = ()
    context: str | None = None
    skip: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def split_options(text: str) -> tuple[str, dict[str, str]]:
    """A question with its options inline ("...?\\nA) x\\nB) y") -> (stem, {"A": "x", ...})."""
    stem: list[str] = []
    options: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        m = _OPTION_LINE.match(line)
        if m and (m.group(1) not in options) and (not options or ord(m.group(1)) == ord(max(options)) + 1
                                                  or m.group(1) == "A"):
            if m.group(1) == "A":
                options = {}
            last = m.group(1)
            options[last] = m.group(2)
        elif last is not None and line.strip():
            options[last] += " " + line.strip()
        elif line.strip():
            stem.append(line.strip())
    if len(options) < 2:
        return _split_inline(text)
    return " ".join(stem), options


def _split_inline(text: str) -> tuple[str, dict[str, str]]:
    """Options written on one line ("...? A) x B) y C) z"): markers A, B, C... in order."""
    marks = []
    want = "A"
    for m in _INLINE_OPTION.finditer(text):
        if m.group(1) == want:
            marks.append(m)
            want = chr(ord(want) + 1)
    if len(marks) < 2:
        return " ".join(text.split()), {}
    options = {m.group(1): text[m.end():(marks[i + 1].start() if i + 1 < len(marks) else len(text))].strip()
               for i, m in enumerate(marks)}
    return " ".join(text[:marks[0].start()].split()), options


def _letter(value: object, where: str) -> str:
    m = _ANSWER.match(str(value or ""))
    if not m:
        raise BenchFormatError(f"{where}: the answer {str(value)[:20]!r} is not an option letter")
    return m.group(1)


def read_curated(path: Path | None = None) -> frozenset[str]:
    """The non-radiograph list: figure paths and ``case:<id>`` entries; comments (#) and blanks ignored."""
    p = path or CURATED_NON_CXR
    if not p.exists():
        raise BenchFormatError(f"{p}: the list of non-radiograph figures does not exist")
    return frozenset(line.split("#", 1)[0].strip() for line in p.read_text().splitlines()
                     if line.split("#", 1)[0].strip())


def load_chestagentbench(folder: Path, *, non_cxr: Iterable[str] | None = None) -> list[BenchItem]:
    """Every question of ``folder/metadata.jsonl`` (the published layout), figures under ``folder``."""
    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise BenchFormatError(f"{meta}: not found (ChestAgentBench ships metadata.jsonl beside figures/)")
    curated = frozenset(non_cxr) if non_cxr is not None else read_curated()
    items: list[BenchItem] = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{meta.name} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchFormatError(f"{where}: not JSON ({exc.msg})") from None
        for key in ("question", "answer", "case_id", "images"):
            if key not in row:
                raise BenchFormatError(f"{where}: missing field {key!r}")
        if not isinstance(row["images"], list):
            raise BenchFormatError(f"{where}: 'images' must be a list of paths")
        stem, options = split_options(str(row["question"]))
        if len(options) < 2:
            raise BenchFormatError(f"{where}: the question has {len(options)} lettered options (A) ... B) ...)")
        qid = str(row.get("full_question_id") or row.get("question_id") or f"line{n}")
        case = str(row["case_id"])
        images = tuple(folder / str(p) for p in row["images"])
        skip = None
        if m := _OTHER_MODALITY.search(str(row["question"])):
            skip = f"the question names another modality ({m.group(0)})"
        elif f"case:{case}" in curated or any(str(p) in curated for p in row["images"]):
            skip = "a figure is on the curated list of non-radiographs"
        elif not images:
            skip = "the question has no figure"
        cats = tuple(c.strip() for c in str(row.get("categories") or "").split(",") if c.strip())
        items.append(BenchItem(id=qid, case_id=case, question=stem, options=options,
                               answer=_letter(row["answer"], where), images=images, categories=cats, skip=skip))
    return items


def load_rexvqa(path: Path, *, images_root: Path | None = None) -> list[BenchItem]:
    """Every question of a ReXVQA JSON file (``{id: {...}}``); ``ImagePath`` entries resolve against
    ``images_root`` (default: the JSON's folder, then its parent: the published tree keeps
    ``metadata/`` beside ``deid_png/``)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*vqa_data.json")) or sorted(path.glob("metadata/*vqa_data.json"))
        if not found:
            raise BenchFormatError(f"{path}: no *_vqa_data.json in it or in metadata/")
        path = found[0]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchFormatError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BenchFormatError(f"{path}: expected an object of questions keyed by id")
    items: list[BenchItem] = []
    for qid, row in data.items():
        where = f"{path.name} question {qid}"
        if not isinstance(row, dict):
            raise BenchFormatError(f"{where}: expected an object")
        for key in ("question", "options", "correct_answer"):
            if key not in row:
                raise BenchFormatError(f"{where}: missing field {key!r}")
        options: dict[str, str] = {}
        for i, opt in enumerate(row["options"]):
            m = _OPTION_LINE.match(str(opt))
            letter, text = (m.group(1), m.group(2)) if m else (chr(ord("A") + i), str(opt).strip())
            options[letter] = text
        rels = [str(p) for p in row.get("ImagePath") or []]
        images = tuple(_resolve(p, path, images_root) for p in rels)
        modalities = {str(m).upper() for m in row.get("ImageModality") or []}
        skip = None
        if not images:
            skip = "the question has no image"
        elif modalities - RADIOGRAPH_MODALITIES:
            skip = f"an image is not a radiograph (modality {', '.join(sorted(modalities - RADIOGRAPH_MODALITIES))})"
        cat = str(row.get("task_name") or row.get("category") or "")
        indication = str(row.get("Indication") or "").strip() or None
        items.append(BenchItem(id=str(qid), case_id=str(row.get("study_id") or qid), question=str(row["question"]),
                               options=options, answer=_letter(row["correct_answer"], where), images=images,
                               categories=(cat,) if cat else (), context=indication, skip=skip,
                               extra={"category": str(row.get("category") or "")}))
    return items


def _resolve(rel: str, json_path: Path, root: Path | None) -> Path:
    clean = rel.replace("\\", "/")
    while clean.startswith(("../", "./")):
        clean = clean.split("/", 1)[1]
    bases = [root] if root is not None else [json_path.parent, json_path.parent.parent]
    for base in bases:
        if (base / clean).exists():
            return base / clean
    return bases[-1] / clean


def load(bench: str, path: Path, *, images_root: Path | None = None) -> list[BenchItem]:
    """The adapter for ``bench`` (one of ``BENCHES``)."""
    if bench == "chestagentbench":
        return load_chestagentbench(path)
    if bench == "rexvqa":
        return load_rexvqa(path, images_root=images_root)
    raise BenchFormatError(f"unknown benchmark {bench!r}: choose one of {', '.join(BENCHES)}")
