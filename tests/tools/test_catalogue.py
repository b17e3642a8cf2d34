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
    assert set(keys) == {"classifier", "vlm", "medgemma", "medgemma15", "embedder", "tiny-classifier", "tiny-vlm",
                         "tiny-medgemma"}
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
    from tools.classifier import loading as cw

    settings = Settings(model_profile="tiny", data_dir=tmp_path, classifier_device="cpu")
    item = catalogue.entry("tiny-classifier")
    assert not item.status(settings).present and item.status(settings).fix == "cxr-agent setup"
    cw.load_classifier(settings.model_copy(update={"data_dir": tmp_path / "other"}))  # now in this process
    assert not item.status(settings).present  # ...but not on disk here: building must still write the file
    assert item.build(settings) == item.files(settings)[0]
    assert item.status(settings).present and all(f.is_file() for f in item.files(settings))
    cw.clear_cache()
    assert item.load(settings).profile == "tiny"


def _names(settings: Settings) -> list[str]:
    return [s.name for s in catalogue.weight_statuses(settings)]


def test_vlm_entries_follow_the_selected_families(tmp_path):
    radvlm = _names(Settings(model_profile="tiny", data_dir=tmp_path))
    assert "vlm: KrauthammerLab/RadVLM" in radvlm and not any("medgemma" in n.lower() for n in radvlm)
    medgemma = _names(Settings(model_profile="tiny", data_dir=tmp_path, vlm_family="medgemma",
                               vlm_model_id="google/medgemma-4b-it"))
    assert "vlm: google/medgemma-4b-it" in medgemma and "vlm: tiny random MedGemma / Gemma 3 (demo)" in medgemma
    assert not any("RadVLM" in n or "LLaVA" in n for n in medgemma)
    # both: each entry checks ITS model, whichever family is primary (the id follows the family)
    both = _names(Settings(model_profile="tiny", data_dir=tmp_path, vlm_family="medgemma",
                           vlm_model_id="google/medgemma-4b-it", vlm_compare="radvlm"))
    assert {"vlm: KrauthammerLab/RadVLM", "vlm: google/medgemma-4b-it", "vlm: tiny random LLaVA-OneVision (demo)",
            "vlm: tiny random MedGemma / Gemma 3 (demo)"} <= set(both) and len(both) == len(set(both)) == 7


def test_missing_medgemma_says_it_is_gated_and_how_to_point_at_a_local_copy(tmp_path):
    settings = Settings(model_profile="real", data_dir=tmp_path, hf_cache_dir=tmp_path / "hf", vlm_compare="medgemma")
    status = catalogue.entry("medgemma").status(settings)
    assert not status.present and status.location == str(tmp_path / "hf")
    assert "google/medgemma-4b-it is not in the Hugging Face cache" in status.detail
    assert "gated" in status.fix and "https://huggingface.co/google/medgemma-4b-it" in status.fix
    assert "`cxr-agent models download --what medgemma`" in status.fix and "CXR_AGENT_VLM_MODEL_ID" in status.fix
    assert "gated" in catalogue.entry("medgemma").missing
    # RadVLM's fix is unchanged and names no gate
    radvlm = catalogue.entry("vlm").status(settings)
    assert "gated" not in radvlm.fix and "`cxr-agent models download` " in radvlm.fix
    assert not catalogue.real_models_present(settings)


def test_medgemma_in_a_local_directory_is_found_by_the_same_check(tmp_path):
    """The tiny MedGemma saved by its build is a complete Gemma 3 model directory: pointed at by
    CXR_AGENT_VLM_MODEL_ID it passes the real entry's check (tools/vlm/weights.py, shared with RadVLM)."""
    demo = Settings(model_profile="tiny", data_dir=tmp_path, vlm_family="medgemma")
    tiny = catalogue.entry("tiny-medgemma")
    assert tiny.status(demo).fix == "cxr-agent setup"
    tiny.build(demo)
    assert tiny.status(demo).present
    local = Settings(model_profile="real", data_dir=tmp_path, vlm_family="medgemma",
                     vlm_model_id=str(tiny.files(demo)[0].parent))
    status = catalogue.entry("medgemma").status(local)
    assert status.present and status.location == local.vlm_model_id and status.fix is None
    assert any(f.name == "config.json" for f in catalogue.entry("medgemma").files(local))
    (Path(local.vlm_model_id) / "model.safetensors").unlink()
    gone = catalogue.entry("medgemma").status(local)
    assert not gone.present and "model weights (*.safetensors)" in gone.detail


def test_a_refused_gated_download_says_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def refuse(**kwargs):  # what the hub answers an account that has not accepted the terms
        import httpx2

        url = f"https://huggingface.co/api/models/{kwargs['repo_id']}/revision/main"
        response = httpx2.Response(401, request=httpx2.Request("GET", url))
        raise GatedRepoError(f"401 Client Error: access to {kwargs['repo_id']} is restricted", response=response)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    settings = Settings(model_profile="real", data_dir=tmp_path, hf_cache_dir=tmp_path / "hf", offline=False)
    with pytest.raises(RuntimeError) as err:
        catalogue.entry("medgemma").download(settings, None)
    msg = str(err.value)
    assert "refused google/medgemma-4b-it" in msg and "accept its terms at https://huggingface.co/google/medgemma-4b-it" in msg
    assert "`cxr-agent models download --what medgemma`" in msg
