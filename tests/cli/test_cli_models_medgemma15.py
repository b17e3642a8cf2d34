"""MedGemma 1.5 in the model catalogue: listed when selected, gated, downloadable by name."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app
from cxr_agent.settings import Settings, get_settings
from tools import catalogue


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_AGENT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CXR_AGENT_CLASSIFIER_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("CXR_AGENT_HF_CACHE_DIR", str(tmp_path / "hf"))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_the_entry_checks_its_own_weights_and_says_it_is_gated(tmp_path):
    settings = Settings(model_profile="real", data_dir=tmp_path, hf_cache_dir=tmp_path / "hf", vlm_compare="medgemma15")
    item = catalogue.entry("medgemma15")
    assert item.family == "medgemma15" and item.download is not None and not item.demo
    assert catalogue.model_name(item, settings) == "google/medgemma-1.5-4b-it"
    status = item.status(settings)
    assert not status.present and status.name == "vlm: google/medgemma-1.5-4b-it"
    assert "google/medgemma-1.5-4b-it is gated on the Hugging Face Hub: accept its terms at " \
           "https://huggingface.co/google/medgemma-1.5-4b-it and log in" in status.fix
    assert "`cxr-agent models download --what medgemma15`" in status.fix
    assert "accept its licence" in item.missing and "log in" in item.missing
    # listed only when a setting selects the family; MedGemma 1 is a different model
    assert item.listed(settings) and not item.listed(Settings(model_profile="real", data_dir=tmp_path))
    assert not catalogue.entry("medgemma").listed(settings)


def _column(table: str, index: int) -> str:
    """One column of a rich table, its folded cell lines joined."""
    cells = [line.split("│")[index].strip() for line in table.splitlines() if line.count("│") >= 6]
    return " ".join(c for c in cells if c)


def test_models_list_shows_it_with_its_fix(env):
    out = CliRunner(env={"COLUMNS": "220"}).invoke(app, ["models", "list"],
                                                     env={"CXR_AGENT_VLM_COMPARE": "medgemma15"}).output
    assert "vlm: google/medgemma-1.5-4b-it" in _column(out, 1)
    assert "`cxr-agent models download --what medgemma15`" in _column(out, -2)
    get_settings.cache_clear()
    plain = CliRunner(env={"COLUMNS": "220"}).invoke(app, ["models", "list"]).output
    assert "vlm: KrauthammerLab/RadVLM" in _column(plain, 1) and "medgemma-1.5" not in plain


def test_download_by_name_is_offered_and_says_why_it_failed(env):
    env.setenv("CXR_AGENT_OFFLINE", "1")
    res = CliRunner().invoke(app, ["models", "download", "--what", "medgemma15"])
    out = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "MedGemma 1.5 google/medgemma-1.5-4b-it: cannot download google/medgemma-1.5-4b-it: offline" in out
    helped = CliRunner().invoke(app, ["models", "download", "--help"], env={"COLUMNS": "200"}).output
    assert "medgemma15" in helped
