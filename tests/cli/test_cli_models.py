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
