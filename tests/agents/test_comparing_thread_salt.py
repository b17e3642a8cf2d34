"""Patient keys under the conversation's own salt: made once per thread and kept in its state, so a study
read later in the thread is key-checked against any earlier one (a mismatch with the named prior is refused),
while another thread's keys for the same patient differ."""

from __future__ import annotations

import numpy as np
import pytest
from graph_scripted import ScriptedVLM, classifier
from langchain_core.messages import HumanMessage

from agents.comparing.pair import StudyPair, patient_keys
from agents.comparing.patient import keep_salt, patient_key, salt_bytes, thread_salt
from graph import runtime
from tools.ingestion.study import Study

COMPARE = "Compared with the prior, what has changed?"


def test_the_salt_is_set_once_per_thread_and_must_be_one():
    salt, recorded = thread_salt({})
    assert len(salt) == 32 and salt_bytes(recorded["patient_salt"]) == salt
    assert thread_salt(None)[0] != salt  # another conversation: another salt
    assert thread_salt({"patient_salt": recorded["patient_salt"]}) == (salt, {})  # held: nothing to record
    assert thread_salt({}, pending=recorded["patient_salt"]) == (salt, recorded)  # made, not yet sent
    hexed = recorded["patient_salt"]
    assert keep_salt("", None) == "" and keep_salt("", hexed) == hexed and keep_salt(hexed, hexed) == hexed
    assert keep_salt(hexed, None) == hexed
    with pytest.raises(ValueError, match="already has its patient_salt"):
        keep_salt(hexed, thread_salt({})[1]["patient_salt"])
    for bad in ("abcd", "zz" * 32, 5):
        with pytest.raises(ValueError, match="patient_salt must be at least 16 random bytes"):
            keep_salt("", bad)


def test_keys_made_under_the_threads_salt_compare_across_pairs():
    pairs = {"b": StudyPair(prior_study_id="a", study_id="b", prior_key="ka", current_key="kb", thread_keys=True),
             "c": StudyPair(prior_study_id="b", study_id="c", prior_key="kb", current_key="kc", thread_keys=True)}
    assert patient_keys(pairs, "a", "c") == ("ka", "kc")  # never read together: each key from its own pair
    assert patient_keys(pairs, "b", "c") == ("kb", "kc")
    assert patient_keys(pairs, "a", "x") == ("ka", None)
    older = {k: v.model_copy(update={"thread_keys": False}) for k, v in pairs.items()}  # one salt per ingest
    assert patient_keys(older, "a", "c") == (None, None) and patient_keys(older, "a", "b") == ("ka", "kb")


def _study(seed: int) -> Study:
    """A film with no sex or age band: only the patient keys can tell whether two are one patient's."""
    pixels = np.random.default_rng(seed).random((64, 64)).astype(np.float32)
    return Study.from_array(pixels, view="PA")


def _paired(g, cfg, prior_id: str, current_id: str, prior_patient: str, current_patient: str, **extra):
    """Send the current study with its pair, keyed under the thread's salt (recorded with the first keys)."""
    values = g.get_state(cfg).values
    salt, recorded = thread_salt(values)
    pair = StudyPair(prior_study_id=prior_id, study_id=current_id, interval_days=30, thread_keys=True,
                     prior_key=patient_key(prior_patient, "HOSP-A", salt=salt),
                     current_key=patient_key(current_patient, "HOSP-A", salt=salt))
    return g.invoke({"messages": [HumanMessage(COMPARE)], "study_id": current_id,
                     "pairs": {current_id: pair.model_dump()}, **recorded, **extra}, cfg)


def test_a_study_read_later_is_key_checked_against_the_named_prior(make_graph, thread):
    g = make_graph(ScriptedVLM(), classifier({"pleural_effusion": 0.3}), router_semantic=False)
    cfg, other = thread(), thread()
    a, b, c, d = (runtime(g).studies.put(_study(i)) for i in range(1, 5))
    g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": a}, cfg)
    _paired(g, cfg, a, b, "P-7", "P-7")
    salt = g.get_state(cfg).values["patient_salt"]
    _paired(g, cfg, b, c, "P-7", "P-7")
    held = g.get_state(cfg).values
    assert held["patient_salt"] == salt  # made once, kept
    assert held["pairs"][b]["current_key"] == held["pairs"][c]["prior_key"]  # one salt: one key per patient
    # the reader names the first study as the prior of the third: never read together, still key-checked
    msg = g.invoke({"messages": [HumanMessage(COMPARE)], "study_id": c, "prior_study_id": a}, cfg)["messages"][-1]
    cmp = msg.additional_kwargs["cxr"]["comparison"]
    assert cmp["compared"] and cmp["patient"] == "consistent" and cmp["prior_study_id"] == a
    assert "Not confirmed to be the same patient" not in msg.content  # without the keys: unconfirmed
    # a fourth film of another patient, read with the third, compared with the first: refused
    _paired(g, cfg, c, d, "P-7", "P-8")
    msg = g.invoke({"messages": [HumanMessage(COMPARE)], "study_id": d, "prior_study_id": a}, cfg)["messages"][-1]
    cmp = msg.additional_kwargs["cxr"]["comparison"]
    assert not cmp["compared"] and cmp["patient"] == "mismatch"
    assert "different patient ids" in msg.content
    # another thread: its own salt, so the same patient gets another key; a second salt for a thread is refused
    g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": a}, other)
    _paired(g, other, a, b, "P-7", "P-7")
    theirs = g.get_state(other).values
    assert theirs["patient_salt"] != salt and theirs["pairs"][b]["current_key"] != held["pairs"][b]["current_key"]
    with pytest.raises(ValueError, match="already has its patient_salt"):
        g.invoke({"messages": [HumanMessage(COMPARE)], "study_id": b, "patient_salt": thread_salt({})[1]["patient_salt"]},
                 other)
