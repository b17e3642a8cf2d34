"""`cxr-agent setup` builds the demo models and the report index once; afterwards nothing is built,
neither by a second setup nor by the tools' first use in a turn."""

from __future__ import annotations

from pathlib import Path

import pytest
from kb_index_helpers import small_reports
from typer.testing import CliRunner

from cli.main import app
from cxr_agent.settings import get_settings


@pytest.fixture
def setup_env(monkeypatch, tmp_path, test_data_dir):
    """Demo profile; the session data dir (demo models shared with the other tests), a fresh index of
    a 12-report corpus in tmp_path."""
    corpus = tmp_path / "reports"
    corpus.mkdir()
    for i, r in enumerate(small_reports()[:12]):
        (corpus / f"r{i:02d}.txt").write_text(r.text)
    for k, v in {"CXR_AGENT_MODEL_PROFILE": "tiny", "CXR_AGENT_OFFLINE": "1", "CXR_AGENT_DATA_DIR": str(test_data_dir),
                 "CXR_AGENT_INDEX_DIR": str(tmp_path / "index"), "CXR_AGENT_CORPUS": str(corpus),
                 "CXR_AGENT_CLASSIFIER_DEVICE": "cpu"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _nothing_may_build(monkeypatch) -> None:
    from tools.classifier import tiny as classifier_tiny
    from tools.retrieval.index import ReportIndex
    from tools.vlm import tiny

    def refuse(*a, **k):
        raise AssertionError("built after setup")

    monkeypatch.setattr(ReportIndex, "build", refuse)
    monkeypatch.setattr(classifier_tiny, "_calibrated", refuse)
    monkeypatch.setattr(tiny, "build_model", refuse)
    monkeypatch.setattr(tiny, "build_processor", refuse)


def test_setup_builds_once_and_the_first_turn_builds_nothing(setup_env, monkeypatch):
    from tools.catalogue import listed_entries
    from tools.classifier import loading as cw
    from tools.retrieval.index import ReportIndex
    from tools.retrieval.tool import RetrievalTool
    from tools.vlm import tiny

    settings = setup_env
    assert not ReportIndex.exists(settings.resolved_index_dir)
    first = CliRunner().invoke(app, ["setup"])
    assert first.exit_code == 0, first.output
    assert "profile: tiny" in first.output and "setup complete" in first.output
    assert "no fine-tuned router model" in first.output.replace("\n", " ")  # optional, and said so
    assert ReportIndex.exists(settings.resolved_index_dir)
    assert all(e.status(settings).present for e in listed_entries(settings) if e.demo)

    _nothing_may_build(monkeypatch)
    again = CliRunner().invoke(app, ["setup"])
    assert again.exit_code == 0, again.output

    # what a new process's first report turn does: open the index, load both demo models
    cw.clear_cache()
    monkeypatch.setattr(tiny, "_memo", {})
    index = RetrievalTool(settings).get_index()
    assert len(index) == 12
    assert cw.load_classifier(settings).profile == "tiny"
    model, processor = tiny.load_tiny(settings.data_dir)
    assert model is not None and processor is not None


def test_setup_reports_a_failed_step_and_exits_nonzero(setup_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_AGENT_CORPUS", str(tmp_path / "no-such-corpus.csv"))
    get_settings.cache_clear()
    res = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["setup"])
    out = res.output.replace("\n", "")
    assert res.exit_code == 1
    assert "error: prior-report index" in out and "no-such-corpus.csv' not found" in out


def test_auto_profile_matches_the_ui(setup_env, monkeypatch):
    from cli.setup import resolve_profile

    monkeypatch.delenv("CXR_AGENT_MODEL_PROFILE")
    settings = setup_env.model_copy(update={"model_profile": "real", "classifier_weights_dir": Path("/nonexistent")})
    assert resolve_profile(settings, "auto") == "tiny"  # real weights absent here: the demo, like `cxr-agent ui`
    assert resolve_profile(settings, "real") == "real"
    with pytest.raises(Exception, match="real, tiny or auto"):
        resolve_profile(settings, "fast")
