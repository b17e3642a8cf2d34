"""Weights integrity a classifier file's sha256 is checked before torch.load sees it.

Files are made here (real xrv architectures, random weights) since no real weights can be downloaded:
the ResNet-50 file as the state dict xrv publishes, the DenseNet file as the pickled module xrv
publishes, and a pickle that would run code if it were ever unpickled.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import requests
import torch

from cxr_agent.settings import Settings
from tools import catalogue
from tools.classifier import loading as cw
from tools.classifier.files import download_classifier_weights, verify_weights, weights_path
from tools.classifier.tiny import tiny_resnet50
from tools.integrity import WeightsIntegrityError, record_hash, recorded_hash, sha256_file, sidecar

RESNET = "resnet50-res512-all"
DENSENET = "densenet121-res224-all"


def _settings(wdir: Path, name: str) -> Settings:
    return Settings(model_profile="real", classifier_model=name, classifier_weights_dir=wdir, data_dir=wdir / "data",
                    classifier_device="cpu")


@pytest.fixture
def torch_load_spy(monkeypatch):
    """Records every torch.load call (its weights_only flag) and still loads."""
    calls: list[bool | None] = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    """A fresh model cache and a data dir of the test's own (the hash records live there)."""
    from cxr_agent.settings import get_settings

    monkeypatch.setenv("CXR_AGENT_DATA_DIR", str(tmp_path / "process-data"))
    get_settings.cache_clear()
    cw.clear_cache()
    yield
    cw.clear_cache()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def resnet_state(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    state = tiny_resnet50(18).state_dict()
    path = tmp_path_factory.mktemp("resnet") / "state.pt"
    torch.save(state, path)
    return path, state


def _install(src: Path, settings: Settings) -> Path:
    dst = weights_path(settings)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def _flip_byte(path: Path, offset: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_resnet_state_dict_loads_with_weights_only_after_its_hash(tmp_path, resnet_state, torch_load_spy):
    src, state = resnet_state
    settings = _settings(tmp_path, RESNET)
    path = _install(src, settings)
    record_hash(path)  # as `cxr-agent models download` does on first download
    model = cw.load_classifier(settings)
    assert torch_load_spy == [True]  # the state dict is read with weights_only=True, once
    assert model.profile == "real" and model.weights_path == str(path) and model.resolution == 512
    assert torch.equal(model.net.state_dict()["fc.weight"], state["fc.weight"])


def test_tampered_file_is_refused_before_torch_load(tmp_path, resnet_state, torch_load_spy):
    src, _ = resnet_state
    settings = _settings(tmp_path, RESNET)
    path = _install(src, settings)
    good = record_hash(path)
    _flip_byte(path)
    bad = sha256_file(path)
    with pytest.raises(cw.ClassifierWeightsMissing) as err:
        cw.load_classifier(settings)
    msg = str(err.value)
    assert str(path) in msg and good in msg and bad in msg  # names the file, expected and actual hash
    assert "cxr-agent models download" in msg and "delete" in msg  # and the fix
    assert torch_load_spy == []  # torch.load never saw the bytes


def test_file_without_a_known_hash_is_not_loaded_until_trusted(tmp_path, resnet_state, torch_load_spy):
    src, _ = resnet_state
    settings = _settings(tmp_path, RESNET)
    path = _install(src, settings)
    status = catalogue.classifier_status(settings)
    assert not status.present and status.fix == "cxr-agent models download --trust-existing"
    with pytest.raises(cw.ClassifierWeightsMissing, match="no known sha256"):
        cw.load_classifier(settings)
    assert torch_load_spy == []
    with pytest.raises(WeightsIntegrityError, match="no known sha256"):  # download verifies what is there
        download_classifier_weights(settings)
    assert download_classifier_weights(settings, trust_existing=True) == path
    assert recorded_hash(path) == sha256_file(path) and catalogue.classifier_status(settings).present
    cw.load_classifier(settings)
    assert torch_load_spy == [True]


def test_a_pin_in_the_catalogue_wins_over_the_recorded_hash(tmp_path, resnet_state, monkeypatch):
    src, _ = resnet_state
    settings = _settings(tmp_path, RESNET)
    path = _install(src, settings)
    record_hash(path)
    monkeypatch.setitem(catalogue.XRV_SHA256, path.name, "0" * 64)
    with pytest.raises(WeightsIntegrityError, match="pinned in tools/catalogue.py") as err:
        verify_weights(path)
    assert "0" * 64 in str(err.value) and sha256_file(path) in str(err.value)
    monkeypatch.setitem(catalogue.XRV_SHA256, path.name, sha256_file(path))
    assert verify_weights(path) == sha256_file(path)


class _RunsCode:
    """Unpickling this creates a marker file: what a malicious weight file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mknod, (str(self.marker),))


def test_densenet_pickle_is_unpickled_only_after_its_hash_matches(tmp_path, torch_load_spy):
    """xrv's DenseNet files are pickled modules that xrv loads with weights_only=False: a file whose
    hash does not match is never handed to it, so code inside it cannot run."""
    import torchxrayvision as xrv

    settings = _settings(tmp_path, DENSENET)
    path = weights_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(xrv.models.DenseNet(weights=None, num_classes=18), path)
    record_hash(path)
    model = cw.load_classifier(settings)  # the genuine pickle loads, through xrv
    assert torch_load_spy == [False] and model.profile == "real" and len(model.targets) == 18
    cw.clear_cache()
    torch_load_spy.clear()

    marker = tmp_path / "pwned"
    path.write_bytes(pickle.dumps(_RunsCode(marker)))  # swapped for a hostile pickle
    with pytest.raises(cw.ClassifierWeightsMissing, match="failed its integrity check"):
        cw.load_classifier(settings)
    assert torch_load_spy == [] and not marker.exists()


def test_first_download_records_the_hash_and_a_pinned_mismatch_is_deleted(tmp_path, monkeypatch):
    import torchxrayvision as xrv

    payload = b"weights from the release" * 100

    def fake_download(url, filename):  # stands in for the network
        Path(filename).write_bytes(payload)

    def no_head(*a, **k):
        raise requests.ConnectionError("no network in tests")

    monkeypatch.setattr(xrv.utils, "download", fake_download)
    monkeypatch.setattr(requests, "head", no_head)
    settings = _settings(tmp_path, RESNET).model_copy(update={"offline": False})  # the network is faked above
    path = download_classifier_weights(settings)
    assert sidecar(path).read_text().split()[0] == sha256_file(path)  # trust on first use, sha256sum format
    assert verify_weights(path)

    path.unlink()
    sidecar(path).unlink()
    monkeypatch.setitem(catalogue.XRV_SHA256, path.name, "f" * 64)
    with pytest.raises(WeightsIntegrityError, match="expected sha256 f{64}"):
        download_classifier_weights(settings)
    assert not path.exists()


def test_every_offered_model_file_has_a_pin_entry():
    """A new model cannot be added without deciding its pin (a hash, or None = trust on first use)."""
    from tools.classifier.files import MODEL_NAMES, model_spec

    files = {os.path.basename(model_spec(n)["weights_url"]) for n in MODEL_NAMES}
    assert files == set(catalogue.XRV_SHA256)


def test_the_trusted_hash_lives_in_the_data_dir_not_beside_the_file(tmp_path, resnet_state, torch_load_spy):
    """Whoever can write the weights directory must not be able to vouch for a file they put there."""
    from cxr_agent.settings import get_settings

    src, _ = resnet_state
    settings = _settings(tmp_path, RESNET)
    path = _install(src, settings)
    digest = record_hash(path)
    record = sidecar(path)
    assert record.parent == get_settings().data_dir / "weights-sha256" and record.parent != path.parent
    assert record.stat().st_mode & 0o777 == 0o600 and record.parent.stat().st_mode & 0o777 == 0o700
    assert not Path(str(path) + ".sha256").exists()

    _flip_byte(path)  # a swapped file, with a matching hash written beside it as the old layout kept it
    Path(str(path) + ".sha256").write_text(f"{sha256_file(path)}  {path.name}\n")
    assert recorded_hash(path) == digest
    with pytest.raises(cw.ClassifierWeightsMissing, match="failed its integrity check"):
        cw.load_classifier(settings)
    assert torch_load_spy == []


def test_densenet_is_unpickled_from_the_verified_bytes_not_reopened(tmp_path, monkeypatch):
    import io

    import torchxrayvision as xrv

    settings = _settings(tmp_path, DENSENET)
    path = weights_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    saved = xrv.models.DenseNet(weights=None, num_classes=18)
    torch.save(saved, path)
    record_hash(path)
    sources: list = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: (sources.append(f), real(f, *a, **k))[1])
    model = cw.load_classifier(settings)
    assert len(sources) == 1 and isinstance(sources[0], io.BytesIO)  # never a path opened after the check
    spec = xrv.models.model_urls[DENSENET]
    assert model.targets == list(spec["labels"]) and model.resolution == spec["input_resolution"]
    assert torch.equal(model.net.state_dict()["classifier.weight"], saved.state_dict()["classifier.weight"])
    assert torch.allclose(model.net.op_threshs, torch.tensor(spec["op_threshs"]))


def test_a_stale_partial_download_is_discarded_not_resumed(tmp_path, monkeypatch):
    import torchxrayvision as xrv

    payload = b"weights from the release" * 100

    def resuming_download(url, filename):  # xrv's behaviour: append to an existing .part
        part = Path(filename + ".part")
        with open(part, "ab") as fh:
            fh.write(payload[part.stat().st_size if part.exists() else 0:])
        os.replace(part, filename)

    monkeypatch.setattr(xrv.utils, "download", resuming_download)
    monkeypatch.setattr(requests, "head", lambda *a, **k: (_ for _ in ()).throw(requests.ConnectionError("offline")))
    settings = _settings(tmp_path, RESNET).model_copy(update={"offline": False})
    path = weights_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(str(path) + ".part").write_bytes(b"HOSTILE PREFIX" * 10)  # left by an earlier transfer
    assert download_classifier_weights(settings) == path
    assert path.read_bytes() == payload and recorded_hash(path) == sha256_file(path)
