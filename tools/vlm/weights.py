"""Are a real VLM's weights here, and how to get them (the catalogue's "vlm" (RadVLM) and
"medgemma" entries: one check for every family, run on that family's settings).

Checked against the local Hugging Face cache only (never the network), so a missing model is
reported at once instead of after a ~144 s hub timeout. Integrity: the weights are safetensors
(read without unpickling, so no code can run from them; no ``torch.load``), and the hub publishes
each weight file's sha256 (its LFS id, the name of its blob in the cache): after a download every
weight blob is hashed and compared with that name (``verify_snapshot``). The tiny demo VLM is
tools/vlm/tiny.py's (built by `cxr-agent setup`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.base import WeightStatus

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

DOWNLOAD_FIX = "cxr-agent models download"
_REQUIRED = ("config.json",)
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json")


def cache_dir(settings: Settings) -> Path:
    if settings.hf_cache_dir is not None:
        return Path(settings.hf_cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


# Hub repos that need an accepted licence and a logged-in token before they download (their page).
GATED = {"google/medgemma-4b-it": "https://huggingface.co/google/medgemma-4b-it",
         "google/medgemma-1.5-4b-it": "https://huggingface.co/google/medgemma-1.5-4b-it"}


def download_command(settings: Settings) -> str:
    """`cxr-agent models download` for RadVLM (the "vlm" entry), `... --what <family>` for another family."""
    family = str(getattr(settings, "vlm_family", "radvlm"))
    return DOWNLOAD_FIX if family == "radvlm" else f"{DOWNLOAD_FIX} --what {family}"


def _gated_note(model_id: str) -> str:
    page = GATED.get(model_id)
    return (f"{model_id} is gated on the Hugging Face Hub: accept its terms at {page} and log in "
            "(`huggingface-cli login` or HF_TOKEN), then ") if page else ""


def _fix(settings: Settings) -> str:
    where = f" (cache: {cache_dir(settings)})"
    local = "set CXR_AGENT_VLM_MODEL_ID to a local directory holding the model"
    if str(getattr(settings, "vlm_family", "radvlm")) != "radvlm":
        local += f" (with CXR_AGENT_VLM_FAMILY={settings.vlm_family})"
    return (
        f"{_gated_note(settings.vlm_model_id)}run `{download_command(settings)}` on a machine with internet access "
        f"to fetch {settings.vlm_model_id}{where}, or {local}, or use "
        "CXR_AGENT_VLM_BACKEND=openai with a server that serves it"
    )


def _cached(repo_id: str, filename: str, cdir: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=str(cdir))
    return Path(hit) if isinstance(hit, str) else None


def local_model_dir(settings: Settings) -> tuple[Path | None, str]:
    """(directory holding a complete model, "") or (None, what is missing)."""
    model_id = settings.vlm_model_id
    as_path = Path(model_id).expanduser()
    if as_path.is_dir():
        missing = [f for f in _REQUIRED if not (as_path / f).exists()]
        shards = _shards(as_path)
        missing += [s for s in shards if not (as_path / s).exists()]
        if not shards and not list(as_path.glob("*.safetensors")) and not list(as_path.glob("*.bin")):
            missing.append("model weights (*.safetensors)")
        return (None, ", ".join(missing)) if missing else (as_path, "")
    cdir = cache_dir(settings)
    try:
        config = _cached(model_id, "config.json", cdir)
    except Exception as exc:  # malformed repo id etc.
        return None, f"{model_id} is neither a local directory nor a valid hub id ({exc})"
    if config is None:
        return None, f"{model_id} is not in the Hugging Face cache {cdir}"
    snapshot = config.parent
    index = _cached(model_id, "model.safetensors.index.json", cdir)
    if index is not None:
        missing = [s for s in _shards(index.parent) if _cached(model_id, s, cdir) is None]
        if missing:
            return None, f"{len(missing)} weight shard(s) of {model_id} missing from {cdir}: {', '.join(missing[:4])}"
    elif _cached(model_id, "model.safetensors", cdir) is None:
        return None, f"the weights of {model_id} (model.safetensors or its index) are not in {cdir}"
    if not any(_cached(model_id, f, cdir) is not None for f in _PROCESSOR_FILES):
        return None, f"the processor/tokenizer files of {model_id} are not in {cdir}"
    return snapshot, ""


def _shards(directory: Path) -> list[str]:
    index = directory / "model.safetensors.index.json"
    if not index.exists():
        return []
    try:
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError):
        return []


def vlm_weight_status(settings: Settings) -> WeightStatus:
    """Whether the configured REAL VLM can be used here, whatever the profile (no network access
    for the local check; the tiny demo VLM has its own entry, tools.vlm.tiny.tiny_vlm_status)."""
    if settings.vlm_backend == "openai":
        return _server_status(settings)
    path, missing = local_model_dir(settings)
    return WeightStatus(
        name=f"vlm: {settings.vlm_model_id}",
        kind="vlm",
        present=path is not None,
        location=str(path or cache_dir(settings)),
        fix=None if path is not None else _fix(settings),
        detail="" if path is not None else missing,
    )


def _server_status(settings: Settings) -> WeightStatus:
    import httpx

    url = settings.openai_base_url.rstrip("/") + "/models"
    name = f"vlm: {settings.openai_model} via {settings.openai_base_url}"
    headers = {"Authorization": f"Bearer {settings.openai_api_key.get_secret_value()}"}
    try:
        resp = httpx.get(url, headers=headers, timeout=3.0)
        resp.raise_for_status()
        ids = [m.get("id") for m in resp.json().get("data", [])]
    except Exception as exc:
        return WeightStatus(
            name, "vlm", False, settings.openai_base_url,
            fix=f"start the OpenAI-compatible server (e.g. `vllm serve {settings.openai_model}`) or fix CXR_AGENT_OPENAI_BASE_URL",
            detail=f"server not answering: {type(exc).__name__}: {exc}",
        )
    present = not ids or settings.openai_model in ids
    return WeightStatus(
        name, "vlm", present, settings.openai_base_url,
        fix=None if present else f"set CXR_AGENT_OPENAI_MODEL to one of {ids}",
        detail=f"server models: {ids}",
    )


def download_vlm_weights(settings: Settings, progress: Any = None) -> Path:
    """Fetch the settings' VLM (RadVLM, or MedGemma on its family settings) into the HF cache
    (snapshot_download), whatever the profile. ``progress``: a tqdm class, or a callable receiving
    status lines. Raises RuntimeError with the fix when offline or when a gated repo refuses us."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError

    from cxr_agent.settings import hub_offline

    say: Callable[[str], None] = progress if callable(progress) and not isinstance(progress, type) else (lambda _m: None)
    if Path(settings.vlm_model_id).expanduser().is_dir():
        return Path(settings.vlm_model_id).expanduser()
    if hub_offline() or settings.offline:
        raise RuntimeError(
            f"cannot download {settings.vlm_model_id}: offline mode is on (HF_HUB_OFFLINE / CXR_AGENT_OFFLINE). "
            f"Unset it on a machine with internet access, or copy the model into {cache_dir(settings)}."
        )
    say(f"downloading {settings.vlm_model_id} (~{_SIZES_GB.get(settings.vlm_model_id, '?')} GB) into {cache_dir(settings)}")
    kwargs: dict[str, Any] = {"repo_id": settings.vlm_model_id, "cache_dir": str(cache_dir(settings))}
    if isinstance(progress, type):
        kwargs["tqdm_class"] = progress
    try:
        snapshot = Path(snapshot_download(**kwargs))
    except GatedRepoError as exc:
        raise RuntimeError(
            f"the hub refused {settings.vlm_model_id} ({type(exc).__name__}). "
            + (_gated_note(settings.vlm_model_id) or "Log in with an account that has access, then ")
            + f"run `{download_command(settings)}` again."
        ) from exc
    say(f"checking the sha256 of {settings.vlm_model_id}'s weight files")
    verify_snapshot(snapshot)
    return snapshot


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SIZES_GB = {"KrauthammerLab/RadVLM": 16, "google/medgemma-4b-it": 9, "google/medgemma-1.5-4b-it": 9}


def verify_snapshot(snapshot: Path) -> int:
    """Hash every weight file of a hub snapshot and compare it with the sha256 the hub published for
    it (the cache names an LFS file's blob by that hash). Returns how many files were checked; raises
    WeightsIntegrityError naming the file, both hashes and the fix."""
    from tools.integrity import WeightsIntegrityError, sha256_file

    checked = 0
    for link in sorted(Path(snapshot).iterdir()):
        if not link.name.endswith(_WEIGHT_SUFFIXES):
            continue
        blob = link.resolve()
        expected = blob.name
        if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
            continue  # not an LFS blob (a local copy): nothing published to compare with
        actual = sha256_file(blob)
        if actual != expected:
            raise WeightsIntegrityError(
                f"weight file {link.name} ({blob}) failed its integrity check: expected sha256 {expected} "
                f"(published by the hub), actual sha256 {actual}. Fix: delete {blob} and run "
                f"`{DOWNLOAD_FIX}` again."
            )
        checked += 1
    return checked
