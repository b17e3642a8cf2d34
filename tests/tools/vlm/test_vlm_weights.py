"""Missing RadVLM weights are reported at once, with the fix; the tiny profile needs none."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cxr_agent.settings import Settings
from tools.base import ToolRequest
from tools.ingestion.study import Study
from tools.vlm.backends.transformers_backend import TransformersBackend
from tools.vlm.tool import VLMTool
from tools.vlm.weights import download_vlm_weights, local_model_dir, vlm_weight_status


def _real(tmp_path: Path, **kw: object) -> Settings:
    return Settings(model_profile="real", hf_cache_dir=tmp_path / "hf", data_dir=tmp_path / "data",
                    vlm_device="cpu", **kw)


def test_missing_weights_fail_instantly_with_the_fix(tmp_path: Path, study: Study) -> None:
    settings = _real(tmp_path)
    t0 = time.perf_counter()
    st = vlm_weight_status(settings)
    assert not st.present and st.kind == "vlm"
    assert "KrauthammerLab/RadVLM" in st.detail and str(tmp_path / "hf") in st.detail
    assert "cxr-agent models download" in st.fix
    ev = VLMTool(settings, backend=TransformersBackend(settings)).run(ToolRequest(intent="report", study=study))
    elapsed = time.perf_counter() - t0
    assert not ev.ok
    for needle in ("KrauthammerLab/RadVLM", "cxr-agent models download", str(tmp_path / "hf")):
        assert needle in ev.error
    assert elapsed < 5.0  # no hub round trip (HF_HUB_OFFLINE=1 and a local cache check first)


def test_download_refuses_offline(tmp_path: Path) -> None:
    try:
        download_vlm_weights(_real(tmp_path))
    except RuntimeError as exc:
        assert "offline" in str(exc) and "KrauthammerLab/RadVLM" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("download should refuse while HF_HUB_OFFLINE=1")


def test_local_directory_with_missing_shards(tmp_path: Path) -> None:
    model_dir = tmp_path / "radvlm"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (model_dir / "model-00001-of-00002.safetensors").write_bytes(b"")
    settings = _real(tmp_path, vlm_model_id=str(model_dir))
    path, missing = local_model_dir(settings)
    assert path is None and "model-00002-of-00002.safetensors" in missing
    (model_dir / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert local_model_dir(settings)[0] == model_dir
    assert download_vlm_weights(settings) == model_dir  # nothing to fetch for a local directory


def test_hub_cache_layout_is_recognised(tmp_path: Path) -> None:
    """A complete snapshot in the HF cache layout counts as present (no network needed)."""
    snap = tmp_path / "hf" / "models--KrauthammerLab--RadVLM" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (tmp_path / "hf" / "models--KrauthammerLab--RadVLM" / "refs").mkdir()
    (tmp_path / "hf" / "models--KrauthammerLab--RadVLM" / "refs" / "main").write_text("0" * 40)
    shards = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    (snap / "config.json").write_text("{}")
    (snap / "preprocessor_config.json").write_text("{}")
    (snap / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {s: s for s in shards}}))
    for s in shards[:3]:
        (snap / s).write_bytes(b"")
    settings = _real(tmp_path)
    st = vlm_weight_status(settings)
    assert not st.present and "1 weight shard(s)" in st.detail and shards[3] in st.detail
    (snap / shards[3]).write_bytes(b"")
    st = vlm_weight_status(settings)
    assert st.present and st.location == str(snap)


def test_tiny_profile_needs_no_weights(tiny_settings: Settings, tmp_path: Path) -> None:
    """The demo VLM is its own catalogue entry: present once built (setup), 'run setup' before; the
    real RadVLM entry keeps reporting the real weights (what `models download` would add)."""
    from tools.catalogue import weight_statuses
    from tools.vlm.tiny import load_tiny, tiny_vlm_status

    unbuilt = tiny_vlm_status(tiny_settings.model_copy(update={"data_dir": tmp_path}))
    assert not unbuilt.present and unbuilt.fix == "cxr-agent setup"
    load_tiny(tiny_settings.data_dir)
    listed = {s.name: s for s in weight_statuses(tiny_settings)}
    tiny = listed["vlm: tiny random LLaVA-OneVision (demo)"]
    assert tiny.present and "random" in tiny.detail and tiny.location == str(tiny_settings.data_dir / "tiny-vlm")
    real = vlm_weight_status(tiny_settings)
    assert real.name == f"vlm: {tiny_settings.vlm_model_id}" and real.name in listed


def test_downloaded_snapshot_is_checked_against_the_hubs_sha256(tmp_path: Path) -> None:
    """Hub weight blobs are named by their published sha256: a blob whose bytes differ is refused."""
    import hashlib

    import pytest

    from tools.integrity import WeightsIntegrityError
    from tools.vlm.weights import verify_snapshot

    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / ("a" * 40)
    blobs.mkdir()
    snap.mkdir(parents=True)
    for name, data in {"model-00001-of-00002.safetensors": b"one" * 100,
                       "model-00002-of-00002.safetensors": b"two" * 100}.items():
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(blob)
    (snap / "config.json").write_text("{}")  # not a weight file: not hashed
    assert verify_snapshot(snap) == 2
    target = (snap / "model-00002-of-00002.safetensors").resolve()
    target.write_bytes(b"tampered")
    with pytest.raises(WeightsIntegrityError) as err:
        verify_snapshot(snap)
    msg = str(err.value)
    assert "model-00002-of-00002.safetensors" in msg and target.name in msg
    assert hashlib.sha256(b"tampered").hexdigest() in msg and "cxr-agent models download" in msg
