"""The model catalogue: one table of every model; listings and the app read it and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_agent.settings import Settings
from tools import catalogue
from tools.base import WeightStatus


def test_every_entry_knows_files_check_load_and_how_to_get_it(tmp_path):
    keys = [e.key for e in catalogue.CATALOGUE]
    assert len(keys) == len(set(keys))
    assert set(keys) == {"classifier", "vlm", "embedder", "tiny-classifier", "tiny-vlm"}
    settings = Settings(model_profile="tiny", data_dir=tmp_path, classifier_weights_dir=tmp_path / "w")
    for e in catalogue.CATALOGUE:
        assert e.missing and callable(e.load) and callable(e.check)
        # real weights are downloaded, demo models are built offline: exactly one of the two
        assert (e.download is None) == e.demo and (e.build is None) != e.demo
        files = e.files(settings)
        assert files and all(isinstance(f, Path) for f in files)
        status = e.status(settings)
        assert isinstance(status, WeightStatus) and status.kind == e.kind
        if not status.present:
            assert status.fix, f"{e.key}: a missing model must say how to fix it"


def test_listing_depends_on_the_profile(tmp_path):
    real = [s.name for s in catalogue.weight_statuses(Settings(model_profile="real", data_dir=tmp_path))]
    tiny = [s.name for s in catalogue.weight_statuses(Settings(model_profile="tiny", data_dir=tmp_path))]
    assert len(real) == 3 and not any("demo" in n for n in real)
    assert tiny[:3] == real and len(tiny) == 5 and all("demo" in n for n in tiny[3:])


def test_a_broken_check_is_a_status_not_a_crash(tmp_path, monkeypatch):
    def broken(settings):
        raise ImportError("module gone")

    bad = catalogue.ModelEntry(key="x", kind="vlm", title="Broken VLM", demo=False, files=lambda s: [],
                               check=broken, load=broken, missing="gone", download=broken)
    monkeypatch.setattr(catalogue, "CATALOGUE", (*catalogue.CATALOGUE, bad))
    statuses = catalogue.weight_statuses(Settings(model_profile="real", data_dir=tmp_path))
    last = statuses[-1]
    assert not last.present and "Broken VLM status unavailable: ImportError: module gone" in last.detail
    assert not catalogue.real_models_present(Settings(model_profile="real", data_dir=tmp_path))


def test_unknown_key_names_the_known_ones():
    with pytest.raises(KeyError, match="tiny-vlm"):
        catalogue.entry("nope")


def test_demo_entries_load_what_they_build(tmp_path):
    """The tiny classifier entry's build writes the cache its load (and the classifier tool) then reads."""
    from tools import classifier_weights as cw

    settings = Settings(model_profile="tiny", data_dir=tmp_path, classifier_device="cpu")
    item = catalogue.entry("tiny-classifier")
    assert not item.status(settings).present and item.status(settings).fix == "cxr-agent setup"
    cw.load_classifier(settings.model_copy(update={"data_dir": tmp_path / "other"}))  # now in this process
    assert not item.status(settings).present  # ...but not on disk here: building must still write the file
    assert item.build(settings) == item.files(settings)[0]
    assert item.status(settings).present and all(f.is_file() for f in item.files(settings))
    cw.clear_cache()
    assert item.load(settings).profile == "tiny"
