"""`cxr-agent forget THREAD_ID`: the conversation's text and its own study are gone from disk."""

from __future__ import annotations

from graph_scripted import ScriptedVLM, classifier
from typer.testing import CliRunner

from agents.memory.checkpointers import make_checkpointer
from cli.main import app
from graph import store_image

GONE = "ZEBRA-QUOKKA-4417 write a report"
KEPT = "OKAPI-LLAMA-9081 write a report"


def _db_files(settings):
    db = settings.data_dir / "checkpoints.sqlite"
    return [f for f in settings.data_dir.iterdir() if f.name.startswith(db.name)]


def _grep(settings, needle: str) -> list[str]:
    return [f.name for f in _db_files(settings) if needle.encode() in f.read_bytes()]


def test_forget_removes_text_and_study_from_disk(make_graph, settings, cxr_images, monkeypatch):
    from cxr_agent.settings import get_settings

    s = settings.model_copy(update={"checkpointer_url": None})
    saver = make_checkpointer(s)
    g = make_graph(ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85}), checkpointer=saver)
    gone_study = store_image(str(cxr_images[0]), graph=g)
    kept_study = store_image(str(cxr_images[1]), graph=g)
    g.invoke({"messages": [("user", GONE)], "study_id": gone_study}, {"configurable": {"thread_id": "gone1"}})
    g.invoke({"messages": [("user", KEPT)], "study_id": kept_study}, {"configurable": {"thread_id": "kept1"}})
    saver.conn.close()
    assert _grep(s, GONE) and _grep(s, KEPT)  # the grep finds conversation text while it exists
    heat = s.artifacts_dir / gone_study
    heat.mkdir(parents=True)
    (heat / "classifier-x-cardiomegaly.npy").write_bytes(b"heat")

    monkeypatch.setenv("CXR_AGENT_DATA_DIR", str(s.data_dir))
    monkeypatch.delenv("CXR_AGENT_CHECKPOINTER_URL", raising=False)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["forget", "gone1"])
        assert res.exit_code == 0, res.output
        assert "Deleted conversation gone1: 1 study(ies), 1 heatmap folder(s) and 1 audit line(s)" in res.output
        assert "could not be compacted" not in res.output
        missing = runner.invoke(app, ["forget", "gone1"])
        assert missing.exit_code == 1 and "No conversation 'gone1'" in missing.output
        assert runner.invoke(app, ["forget"]).exit_code != 0  # neither a thread nor --expired
        expired = runner.invoke(app, ["forget", "--expired"])
        assert expired.exit_code == 0 and "deleted 0 conversation(s)" in expired.output
    finally:
        get_settings.cache_clear()
    assert _grep(s, GONE) == [] and _grep(s, KEPT)
    assert not list(s.studies_dir.rglob(f"{gone_study}*")) and list(s.studies_dir.rglob(f"{kept_study}*"))
    assert not heat.exists()
    for f in _db_files(s):
        assert f.stat().st_mode & 0o077 == 0


def test_forget_says_when_the_database_could_not_be_compacted(monkeypatch, capsys):
    import typer

    from cli.forget import _report_compaction

    _report_compaction(True)
    _report_compaction(None)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(typer, "secho", lambda msg, **kw: print(msg))
    _report_compaction(False)
    assert "could not be compacted" in capsys.readouterr().out
