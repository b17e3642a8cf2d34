"""`cxr-agent ask IMAGE --prior PRIOR` with dated DICOMs keys both films under the conversation's salt: a
film read later in the same thread gets the same key for the same patient (and a film of another patient
compared with it is refused), while another thread's key for that patient differs."""

from __future__ import annotations

from graph_scripted import ScriptedVLM, classifier
from typer.testing import CliRunner

import graph as graph_module
from cli.main import app


def test_ask_prior_keys_every_film_of_a_thread_under_its_salt(monkeypatch, settings, shared_data, tmp_path):
    from dated_dicom import dated_film

    source = shared_data / "dicom" / "CR-MONO1-10-chest.dcm"
    films = {}
    for name, patient, day, seed in (("a", "P-7", "20260110", 1), ("b", "P-7", "20260301", 2),
                                     ("c", "P-7", "20260501", 3), ("d", "P-8", "20260601", 4)):
        films[name] = tmp_path / f"{name}.dcm"
        dated_film(source, patient=patient, day=day, seed=seed).save_as(films[name], enforce_file_format=True)
    from agents.memory.checkpointers import make_checkpointer

    saver, real_build = make_checkpointer(url="memory"), graph_module.build_graph

    def fake_build(_settings=None, **_kw):
        return real_build(settings.model_copy(update={"router_semantic": False}),
                          tools=[ScriptedVLM(), classifier({"pleural_effusion": 0.2})], builtin_tools=False,
                          plugins=False, checkpointer=saver)

    monkeypatch.setattr(graph_module, "build_graph", fake_build)
    runner = CliRunner(env={"COLUMNS": "300"})

    def ask(current: str, prior: str, thread: str):
        res = runner.invoke(app, ["ask", str(films[current]), "--prior", str(films[prior]), "--thread", thread, "-q"])
        assert res.exit_code == 0, res.output
        values = fake_build().get_state({"configurable": {"thread_id": thread}}).values
        return res.output, values

    ask("b", "a", "s1")
    _, one = ask("c", "b", "s1")
    pairs = list(one["pairs"].values())
    assert pairs[0]["current_key"] == pairs[1]["prior_key"] == pairs[1]["current_key"] == pairs[0]["prior_key"]
    assert all(p["thread_keys"] for p in pairs) and len(one["patient_salt"]) == 64
    assert "P-7" not in str(one)
    _, other = ask("b", "a", "s2")
    assert other["patient_salt"] != one["patient_salt"]
    assert next(iter(other["pairs"].values()))["current_key"] != pairs[0]["current_key"]
    out, refused = ask("d", "c", "s1")  # another patient's film, read later in the first thread
    cmp = refused["messages"][-1].additional_kwargs["cxr"]["comparison"]
    assert not cmp["compared"] and cmp["patient"] == "mismatch" and "different patient ids" in out
    assert refused["patient_salt"] == one["patient_salt"]
