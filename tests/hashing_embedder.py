"""A sentence-transformers stand-in for tests that build a real FAISS report index without embedding weights."""

from __future__ import annotations

import hashlib
import re

import numpy as np


class HashingModel:
    """Bag of hashed words, L2-normalised: similar texts land near each other, deterministically (tests only)."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts, **_kw) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)
