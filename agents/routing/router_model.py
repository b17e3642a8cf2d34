"""The fine-tuned router model on disk: a MiniLM fine-tuned on the labelled turns and its logistic regression head.

Why a file format of its own: the semantic router loads the model with sentence-transformers and numpy only
(SetFit is needed to build it, never to route), and refuses a model built from other labelled turns than the
ones it ships with, since its head would then answer for examples that are no longer there.

Layout of ``<data_dir>/router-model/``: ``body/`` (a saved SentenceTransformer), ``head.npz`` (``intents``,
``coef``, ``intercept`` of the regression), ``meta.json`` (the examples file's SHA-256, the training budget
and seed, the base model).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
DIR_NAME = "router-model"


class RouterModelError(RuntimeError):
    """The fine-tuned router model is absent, built from other examples, or unreadable."""


def model_dir(data_dir: str | Path) -> Path:
    """Where the fine-tuned router model lives under the data dir."""
    return Path(data_dir) / DIR_NAME


def examples_digest(path: str | Path) -> str:
    """SHA-256 of the labelled-examples file, byte for byte: the model's pinned input."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_meta(directory: str | Path) -> dict[str, Any]:
    p = Path(directory) / "meta.json"
    if not p.is_file():
        raise RouterModelError(f"no fine-tuned router model at {directory} (build it: cxr-agent router train)")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RouterModelError(f"{p} is not JSON ({exc}); rebuild it: cxr-agent router train") from exc
    if meta.get("format") != FORMAT:
        raise RouterModelError(f"{p}: format {meta.get('format')!r}, this version reads {FORMAT}; "
                               "rebuild it: cxr-agent router train")
    return meta


def check(directory: str | Path, examples_path: str | Path) -> dict[str, Any]:
    """The model's metadata if it was built from exactly ``examples_path``; else RouterModelError saying why."""
    meta = read_meta(directory)
    now = examples_digest(examples_path)
    if meta.get("examples_sha256") != now:
        raise RouterModelError(
            f"the fine-tuned router model at {directory} is stale: built from examples "
            f"{str(meta.get('examples_sha256'))[:12]}, {examples_path} is now {now[:12]}; "
            "rebuild it: cxr-agent router train")
    for name in ("body/modules.json", "head.npz"):
        if not (Path(directory) / name).is_file():
            raise RouterModelError(f"the fine-tuned router model at {directory} lacks {name}; "
                                   "rebuild it: cxr-agent router train")
    return meta


def read_head(directory: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(intents, coef, intercept) of the saved logistic regression head."""
    with np.load(Path(directory) / "head.npz", allow_pickle=False) as z:
        return [str(i) for i in z["intents"]], np.asarray(z["coef"], np.float64), np.asarray(z["intercept"], np.float64)


def write_head(directory: str | Path, intents: list[str], coef: np.ndarray, intercept: np.ndarray) -> None:
    np.savez(Path(directory) / "head.npz", intents=np.asarray(intents, dtype=str),
             coef=np.asarray(coef, np.float64), intercept=np.asarray(intercept, np.float64))


def write_meta(directory: str | Path, meta: dict[str, Any]) -> None:
    (Path(directory) / "meta.json").write_text(json.dumps({"format": FORMAT, **meta}, indent=2, sort_keys=True) + "\n",
                                               encoding="utf-8")
