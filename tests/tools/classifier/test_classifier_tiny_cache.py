"""The tiny (demo) classifier is built once and then loaded from the data dir: same model, hash-checked."""

from __future__ import annotations

import shutil

import pytest
import torch

from tools.classifier import tiny as ct
from tools.integrity import recorded_hash, sha256_file, sidecar

NAME = "densenet121-res224-all"


def _outputs(model) -> torch.Tensor:
    x = ct._synthetic_images(2, model.resolution, seed=7)
    with torch.no_grad():
        return model.head(model.features(x))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(model built from the seed, data dir it was cached in): the reference every load must equal."""
    root = tmp_path_factory.mktemp("tiny-clf")
    return ct.build_tiny(NAME, "cpu", root), root


@pytest.fixture
def fresh(built):
    return built[0]


@pytest.fixture
def data_dir(built, tmp_path):
    """A copy of the built cache, free to tamper with."""
    shutil.copytree(built[1], tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_built_once_then_loaded_from_disk_identical(data_dir, fresh, monkeypatch):
    tmp_path = data_dir
    path = ct.cache_path(tmp_path, NAME)
    assert path.is_file() and recorded_hash(path) == sha256_file(path)

    def no_rebuild(name):
        raise AssertionError("the cached tiny classifier was rebuilt")

    monkeypatch.setattr(ct, "_calibrated", no_rebuild)
    loaded = ct.build_tiny(NAME, "cpu", tmp_path)
    assert torch.allclose(_outputs(loaded), _outputs(fresh), atol=1e-5)
    assert torch.equal(loaded.op_threshs.isnan(), fresh.op_threshs.isnan())
    assert torch.allclose(loaded.op_threshs.nan_to_num(), fresh.op_threshs.nan_to_num())
    assert loaded.profile == "tiny" and loaded.threshold_source == ct.TINY_THRESHOLD_SOURCE


def test_tampered_cache_is_rebuilt_not_loaded(data_dir, fresh, monkeypatch):
    tmp_path = data_dir
    path = ct.cache_path(tmp_path, NAME)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only")) or real_load(*a, **k))
    rebuilt = ct.build_tiny(NAME, "cpu", tmp_path)
    assert loads == []  # the tampered bytes never reached torch.load
    assert torch.allclose(_outputs(rebuilt), _outputs(fresh), atol=1e-5)
    assert recorded_hash(path) == sha256_file(path)  # rewritten intact
    ct.build_tiny(NAME, "cpu", tmp_path)
    assert loads == [True]  # the rewritten cache is read as a state dict only


def test_cache_without_its_recorded_hash_is_rebuilt(data_dir, monkeypatch):
    tmp_path = data_dir
    sidecar(ct.cache_path(tmp_path, NAME)).unlink()
    calls = []
    real = ct._calibrated
    monkeypatch.setattr(ct, "_calibrated", lambda name: calls.append(name) or real(name))
    ct.build_tiny(NAME, "cpu", tmp_path)
    assert calls == [NAME]
