"""Build the fine-tuned router model: the bundled MiniLM fine-tuned with SetFit on the labelled turns, then the
router's logistic regression head fitted on the fine-tuned embeddings, saved under the data dir.

Why SetFit: a few hundred labelled sentences are too few to train a classifier end to end, but enough for
SetFit's contrastive pairs (two turns of one intent pulled together, of two intents pushed apart) to move
the embedding so that intents separate; the regression head then routes as before. SetFit is needed here
only (the `router-train` extra); routing loads the result with sentence-transformers and numpy.

Built only on request: by cross-validation and on the held-out sets (eval/router_compare.py) it asks back
less than the plain regression over the bundled MiniLM but errs about as much more, so it is no default.

Reproducible: fixed seed, one CPU-sized budget, the examples file's SHA-256 recorded in the model's
metadata (a model built from other examples is refused at load: agents/routing/router_model.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agents.routing import router_model, rules
from agents.routing.semantic import EXAMPLES_PATH, IntentClassifier, delexicalise, load_examples

ITERATIONS = 4  # contrastive pairs drawn per labelled turn (each a positive and a negative)
EPOCHS = 1
BATCH_SIZE = 32
SEED = 0


def fine_tune_body(texts: list[str], intents: list[str], *, base: str | Path | None = None, seed: int = SEED,
                   iterations: int = ITERATIONS, epochs: int = EPOCHS, batch_size: int = BATCH_SIZE) -> Any:
    """The sentence-transformer ``base`` (default: the bundled MiniLM) fine-tuned SetFit-style on the texts."""
    if len(texts) != len(intents) or len(set(intents)) < 2:
        raise ValueError("fine-tuning needs one intent per text and at least two intents")
    try:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError as exc:
        raise ImportError(f"building the router model needs SetFit: pip install 'cxr-agent[router-train]' ({exc})") from exc

    from tools.retrieval.embedder import bundled_model_path

    model = SetFitModel.from_pretrained(str(base or bundled_model_path()), local_files_only=True)
    with tempfile.TemporaryDirectory(prefix="cxr-setfit-") as scratch:  # its trainer checkpoints, never the cwd
        args = TrainingArguments(output_dir=scratch, batch_size=batch_size, num_iterations=iterations,
                                 num_epochs=epochs, seed=seed, show_progress_bar=False, report_to="none",
                                 save_strategy="no")
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts, "label": intents}))
        trainer.train_embeddings(*trainer.dataset_to_parameters(trainer.train_dataset), args=args)
    return model.model_body


def encoder(body: Any) -> Callable[[list[str]], np.ndarray]:
    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(body.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False))

    return encode


def prepared(examples: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The texts as the classifier sees them (cleaned, findings delexicalised) and their intents."""
    return [delexicalise(rules._clean(t)) for t, _ in examples], [i for _, i in examples]


def train_router_model(out_dir: str | Path, *, examples_path: str | Path | None = None,
                       base: str | Path | None = None, seed: int = SEED, iterations: int = ITERATIONS,
                       epochs: int = EPOCHS, batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Fine-tune, fit the head, and write the router model to ``out_dir`` (replaced whole, never half-written).

    Returns its metadata (examples SHA-256, budget, seed, training seconds)."""
    src = Path(examples_path) if examples_path else EXAMPLES_PATH
    digest = router_model.examples_digest(src)
    examples = load_examples(src)
    texts, intents = prepared(examples)
    t0 = time.perf_counter()
    body = fine_tune_body(texts, intents, base=base, seed=seed, iterations=iterations, epochs=epochs,
                          batch_size=batch_size)
    clf = IntentClassifier(encoder(body), examples)
    seconds = round(time.perf_counter() - t0, 1)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        body.save(str(tmp / "body"))
        router_model.write_head(tmp, clf.intents, clf._coef, clf._intercept)
        meta = {"examples_sha256": digest, "examples_file": src.name, "n_examples": len(examples),
                "intents": clf.intents, "base_model": Path(str(base)).name if base else "bundled all-MiniLM-L6-v2",
                "method": "SetFit contrastive fine-tune + logistic regression head (C=10)", "seed": seed,
                "iterations": iterations, "epochs": epochs, "batch_size": batch_size, "train_seconds": seconds,
                "cpus": os.cpu_count()}
        router_model.write_meta(tmp, meta)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"format": router_model.FORMAT, **meta}
