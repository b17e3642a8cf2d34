"""Shared, build-once fixtures for the index / retrieval / CLI tests (one real-MiniLM build per process)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from cxr_agent.settings import Settings

# Enough IU reports to hold several pleural effusions, few enough to embed in seconds.
SMALL_N = 160


def _scratch(prefix: str) -> Path:
    """A temporary folder removed when the process exits (these builds outlive any one test)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, True)
    return root


def kb_settings(index_dir: Path, **kw) -> Settings:
    return Settings(index_dir=index_dir, **kw)


@lru_cache(maxsize=1)
def small_reports() -> tuple:
    from tools.retrieval.corpus import iu_xray_reports

    return tuple(iu_xray_reports(limit=SMALL_N + 40))


@lru_cache(maxsize=1)
def built_index_dir() -> Path:
    """An exact index of the first SMALL_N IU reports, built once; copy it before mutating."""
    from tools.retrieval.index import ReportIndex

    root = _scratch("cxr-kb-test-")
    path = root / "index"
    idx = ReportIndex.build(small_reports()[:SMALL_N], kb_settings(path), corpus_spec="iu-xray", batch_size=64)
    idx.close()
    return path


def write_prior_corpus(path: Path, limit: int = 80) -> Path:
    """The first ``limit`` IU reports as an ``id,text`` CSV: a small prior-report corpus for an app under test."""
    import csv

    from tools.retrieval.corpus import iu_xray_reports

    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for r in iu_xray_reports(limit=limit):
            w.writerow([r.id, r.text])
    return path


def copy_index(dst_root: Path) -> Path:
    dst = dst_root / "index"
    shutil.copytree(built_index_dir(), dst)
    return dst


@lru_cache(maxsize=1)
def tiny_embedder_dir() -> Path:
    """A random-initialised 32-d BERT sentence-transformer saved to disk (same architecture, tiny)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from tools.retrieval.embedder import bundled_model_path

    root = _scratch("cxr-tiny-st-")
    tok = BertTokenizerFast.from_pretrained(str(bundled_model_path()))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    st = SentenceTransformer(modules=[models.Transformer(str(root / "hf"), max_seq_length=64), models.Pooling(32),
                                      models.Normalize()], device="cpu")
    st.save(str(root / "st"))
    return root / "st"
