"""Labelled image folders: the shared `labels.csv` format and MIMIC-CXR/CheXpert-style one-column-per-label CSVs.

Both become `LabelledImage`s with labels on the project vocabulary (knowledge.vocabulary.normalize):
1 positive, 0 negative, -1 uncertain; a finding the source does not label is absent from `labels` (masked).
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.evidence import Box
from knowledge.vocabulary import NIH_LABELS, normalize

IMAGE_COLUMNS = ("filename", "Path", "path", "image", "Image Index", "dicom_path")


class LabelsError(ValueError):
    """A labels file that cannot be read; the message names the file and the fix."""


@dataclass
class LabelledImage:
    filename: str  # as written in the CSV (relative to the folder)
    path: Path
    labels: dict[str, int] = field(default_factory=dict)  # finding id -> 1 / 0 / -1
    boxes: list[Box] = field(default_factory=list)  # Box.label = finding id, normalised to the image size
    width: int | None = None
    height: int | None = None

    def truth(self, finding: str) -> int | None:
        """1 / 0 for evaluation, None when unlabelled or uncertain (masked)."""
        v = self.labels.get(finding)
        return v if v in (0, 1) else None


def _open(path: Path):
    return gzip.open(path, "rt", newline="", encoding="utf-8") if path.suffix == ".gz" else path.open(newline="", encoding="utf-8")


def parse_bbox(cell: str, width: int, height: int) -> list[Box]:
    """`Name:x,y,w,h|...` (pixels of the stored image, x,y top-left) -> Boxes normalised by (width, height).
    Names are mapped with normalize(); unknown names keep their text as the label. Boxes are clipped to the image."""
    out: list[Box] = []
    for part in (cell or "").split("|"):
        part = part.strip()
        if not part:
            continue
        name, sep, nums = part.rpartition(":")
        if not sep:
            raise LabelsError(f"bbox entry {part!r} is not 'Name:x,y,w,h'")
        try:
            x, y, w, h = (float(v) for v in nums.split(","))
        except ValueError as exc:
            raise LabelsError(f"bbox entry {part!r}: expected four numbers x,y,w,h") from exc
        out.append(pixel_box(x, y, w, h, width, height, normalize(name) or name.strip()))
    return out


def pixel_box(x: float, y: float, w: float, h: float, width: int, height: int, label: str | None) -> Box:
    def c(v: float) -> float:
        return min(1.0, max(0.0, v))

    return Box(x1=c(x / width), y1=c(y / height), x2=c((x + w) / width), y2=c((y + h) / height), label=label)


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except Exception:
        return None


def _int(v: str | None) -> int | None:
    try:
        return int(float(v)) if v not in (None, "") else None
    except ValueError:
        return None


def _chexpert_value(cell: str | None) -> int | None:
    if cell is None or str(cell).strip() == "":
        return None
    try:
        v = int(float(cell))
    except ValueError:
        return None
    return v if v in (1, 0, -1) else None


def load_labels(source: str | Path, *, root: Path | None = None) -> list[LabelledImage]:
    """Read a folder (its labels.csv) or a CSV file.

    - `labels` column (the shared data's format): `|`-separated NIH-style names are positive; every other
      NIH ChestX-ray14 finding is negative (that is how NIH labels are defined); `bbox` gives boxes.
    - otherwise one column per label (MIMIC-CXR / CheXpert: 1, 0, -1 uncertain, blank = unmentioned):
      columns that normalize() maps onto the vocabulary are read; the image column is the first of
      filename / Path / path / image.
    Image paths are relative to `root` (default: the folder holding the CSV).
    """
    source = Path(source)
    csv_path = source / "labels.csv" if source.is_dir() else source
    if not csv_path.is_file():
        raise LabelsError(f"{csv_path}: no labels file; give a folder with labels.csv or the CSV itself")
    base = root or csv_path.parent
    with _open(csv_path) as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        img_col = next((c for c in IMAGE_COLUMNS if c in cols), None)
        if img_col is None:
            raise LabelsError(f"{csv_path}: no image column; expected one of {', '.join(IMAGE_COLUMNS)} (have {cols})")
        rows = list(reader)
    out: list[LabelledImage] = []
    if "labels" in cols:
        nih = sorted(set(NIH_LABELS.values()) - {"no_finding"})
        for row in rows:
            names = [n.strip() for n in (row.get("labels") or "").split("|") if n.strip()]
            pos = {f for f in (normalize(n) for n in names) if f}
            nih_style = bool(names) and all(normalize(n) in nih or normalize(n) == "no_finding" for n in names)
            # NIH-style rows label every NIH finding; other label sets (e.g. "COVID-19") only their positives
            labels = {f: int(f in pos) for f in nih} if nih_style else {f: 1 for f in pos}
            out.append(_with_boxes(row, img_col, base, labels))
    else:
        label_cols = {c: normalize(c) for c in cols if c != img_col}
        label_cols = {c: f for c, f in label_cols.items() if f}
        if not label_cols:
            raise LabelsError(f"{csv_path}: neither a 'labels' column nor label columns such as 'Pleural Effusion'")
        for row in rows:
            labels = {f: v for c, f in label_cols.items() if (v := _chexpert_value(row.get(c))) is not None}
            out.append(_with_boxes(row, img_col, base, labels))
    return out


def _with_boxes(row: dict[str, str], img_col: str, base: Path, labels: dict[str, int]) -> LabelledImage:
    filename = row[img_col].strip()
    path = base / filename
    width, height = _int(row.get("width")), _int(row.get("height"))
    boxes: list[Box] = []
    if (row.get("bbox") or "").strip():
        if width is None or height is None:
            size = _image_size(path)
            if size is None:
                raise LabelsError(f"{filename}: bbox given but no width/height columns and the image cannot be read")
            width, height = size
        boxes = parse_bbox(row["bbox"], width, height)
    return LabelledImage(filename, path, labels, boxes, width, height)


def load_nih_bbox(csv_path: str | Path, images: list[LabelledImage]) -> int:
    """Add boxes from NIH's BBox_List_2017.csv(.gz) (Image Index, Finding Label, x, y, w, h in pixels of the
    1024x1024 image) to the images whose basename matches; returns how many boxes were added."""
    by_name = {Path(im.filename).name: im for im in images}
    added = 0
    with _open(Path(csv_path)) as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for row in reader:
            if len(row) < 6 or row[0] not in by_name:
                continue
            im = by_name[row[0]]
            w, h = im.width or 1024, im.height or 1024
            box = pixel_box(*(float(v) for v in row[2:6]), w, h, normalize(row[1]) or row[1])
            if not any(b.label == box.label and b.iou(box) > 0.9 for b in im.boxes):  # same box, rounded
                im.boxes.append(box)
                added += 1
    return added
