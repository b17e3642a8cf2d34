"""`cxr-agent models list/download` and the UI's model panel read only the model catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cxr_agent.settings import Settings, get_settings
from tools import catalogue
from tools.base import WeightStatus


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_AGENT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CXR_AGENT_CLASSIFIER_WEIGHTS_DIR", str(tmp_path / "w"))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def _extra(calls: list) -> catalogue.ModelEntry:
    def check(settings):
        return WeightStatus("segmenter: lungs-v1", "classifier", False, "/nowhere/lungs.pt",
                            fix="cxr-agent models download --what segmenter", detail="file missing")

    def download(settings, progress=None):
        calls.append(settings.data_dir)
        return Path("/nowhere/lungs.pt")

    return catalogue.ModelEntry(key="segmenter", kind="classifier", title="lung segmenter", demo=False,
                                files=lambda s: [Path("/nowhere/lungs.pt")], check=check, load=check,
                                missing="not here", download=download)


def test_a_new_catalogue_entry_shows_in_the_cli_and_the_ui_panel(env):
    from ui.model_status import model_status_lines

    calls: list = []
    env.setattr(catalogue, "CATALOGUE", (*catalogue.CATALOGUE, _extra(calls)))
    listed = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert "segmenter: lungs-v1" in listed.output and "--what segmenter" in listed.output
    lines = model_status_lines(Settings(model_profile="real"))
    seg = [x for x in lines if x.name == "segmenter: lungs-v1"]
    assert seg and seg[0].state == "missing" and seg[0].fix == "cxr-agent models download --what segmenter"
    fetched = CliRunner().invoke(app, ["models", "download", "--what", "segmenter"])
    assert fetched.exit_code == 0, fetched.output
    assert calls == [get_settings().data_dir] and "lung segmenter ready" in fetched.output


def test_list_under_the_demo_profile_says_whether_setup_ran(env):
    env.setenv("CXR_AGENT_MODEL_PROFILE", "tiny")
    out = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["models", "list"]).output
    assert "tiny VLM" in out or "LLaVA-OneVision (demo)" in out
    assert "cxr-agent setup" in out  # demo models not built yet in this fresh data dir


def test_download_of_an_unknown_kind_names_the_choices(env):
    res = CliRunner().invoke(app, ["models", "download", "--what", "segmenter"])
    assert res.exit_code != 0 and "classifier" in res.output and "embedder" in res.output


def test_download_offline_reports_each_model_clearly(env):
    env.setenv("CXR_AGENT_OFFLINE", "1")
    res = CliRunner().invoke(app, ["models", "download", "--what", "vlm"])
    assert res.exit_code == 1 and "offline" in res.output and "RadVLM" in res.output


def test_list_shows_medgemma_with_its_fix_when_it_is_selected(env):
    env.setenv("CXR_AGENT_VLM_COMPARE", "medgemma")
    env.setenv("CXR_AGENT_HF_CACHE_DIR", str(get_settings().data_dir / "hf"))
    get_settings.cache_clear()
    out = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["models", "list"]).output
    assert "vlm: KrauthammerLab/RadVLM" in out and "vlm: google/medgemma-4b-it" in out
    fix = _column(out, -2)  # the "fix" column's folded lines, read back as one text
    assert "google/medgemma-4b-it is gated on the Hugging Face Hub: accept its terms at" in fix
    assert "`cxr-agent models download --what medgemma`" in fix and "set CXR_AGENT_VLM_MODEL_ID to a local directory" in fix
    assert "google/medgemma-4b-it is not in the Hugging Face cache" in _column(out, -3)


def _column(table: str, index: int) -> str:
    """One column of a rich table, its folded cell lines joined (rows together: enough to search)."""
    cells = [line.split("│")[index].strip() for line in table.splitlines() if line.count("│") >= 6]
    return " ".join(c for c in cells if c)


def test_download_all_fetches_only_the_selected_vlm_families(env):
    env.setenv("CXR_AGENT_OFFLINE", "1")
    res = CliRunner().invoke(app, ["models", "download", "--what", "all"])
    assert res.exit_code == 1 and "RadVLM KrauthammerLab/RadVLM: cannot download" in res.output
    assert "MedGemma" not in res.output
    env.setenv("CXR_AGENT_VLM_FAMILY", "medgemma")
    env.setenv("CXR_AGENT_VLM_MODEL_ID", "google/medgemma-4b-it")
    get_settings.cache_clear()
    res = CliRunner().invoke(app, ["models", "download", "--what", "all"])
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "MedGemma google/medgemma-4b-it: cannot download google/medgemma-4b-it: offline" in out
    assert "RadVLM" not in out


def test_setup_builds_the_tiny_medgemma_when_it_is_selected(env):
    from cli.setup import setup_steps

    env.setenv("CXR_AGENT_MODEL_PROFILE", "tiny")
    settings = Settings(model_profile="tiny", vlm_compare="medgemma")
    labels = [label for label, _ in setup_steps(settings)]
    assert "tiny VLM (demo)" in labels and "tiny MedGemma (demo)" in labels
    assert "tiny MedGemma (demo)" not in [label for label, _ in setup_steps(Settings(model_profile="tiny"))]
    item = catalogue.entry("tiny-medgemma")
    assert not item.status(settings).present
    dict(setup_steps(settings))["tiny MedGemma (demo)"](lambda *a: None)
    assert item.status(settings).present and (settings.data_dir / "tiny-medgemma" / "config.json").is_file()
    listed = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["models", "list"], env={"CXR_AGENT_VLM_COMPARE": "medgemma"})
    assert "MedGemma / Gemma 3 (demo)" in listed.output


def test_list_and_setup_say_whether_the_fine_tuned_router_model_is_built(env, tmp_path):
    from agents.routing import router_model
    from agents.routing.semantic import EXAMPLES_PATH
    from cli.models import router_model_status

    listed = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert "router model" in listed.output and "cxr-agent router train" in listed.output
    built, where, detail = router_model_status(get_settings())
    assert not built and where == str(tmp_path / "router-model") and "no fine-tuned router model" in detail
    # metadata of a model built from other examples: stale, and said so
    target = router_model.model_dir(tmp_path)
    (target / "body").mkdir(parents=True)
    (target / "body" / "modules.json").write_text("[]")
    (target / "head.npz").write_bytes(b"")
    router_model.write_meta(target, {"format": router_model.FORMAT, "examples_sha256": "0" * 64, "n_examples": 3})
    built, _, detail = router_model_status(get_settings())
    assert not built and "stale" in detail
    router_model.write_meta(target, {"format": router_model.FORMAT, "n_examples": 3,
                                     "examples_sha256": router_model.examples_digest(EXAMPLES_PATH)})
    built, _, detail = router_model_status(get_settings())
    assert built and "3 examples" in detail
    listed = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["models", "list"])
    assert "SetFit on 3 examples" in listed.output
