"""All five same-patient NIH ChestX-ray14 pairs through graph.invoke on the tiny models: each comparison turn
opens with a change table against the film of the lower follow_up (read first or not), and claims worse or
improved only where a tool that compares priors supports it. One graph for the module."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from graph_scripted import retrieval
from langchain_core.messages import HumanMessage

from cxr_agent.settings import Settings
from graph import build_graph, runtime

ASK = "Is it worse than before?"


def nih_pairs(shared_data: Path) -> list[tuple[str, tuple[int, Path], tuple[int, Path]]]:
    """Patients with two images as (patient id, (follow_up, prior), (follow_up, current)), ordered by
    follow_up (not by file name)."""
    by_patient: dict[str, list[tuple[int, Path]]] = {}
    root = shared_data / "nih_cxr14"
    with (root / "labels.csv").open() as fh:
        for row in csv.DictReader(fh):
            notes = dict(kv.split("=", 1) for kv in row["notes"].split("; ") if "=" in kv)
            by_patient.setdefault(notes["patient_id"], []).append((int(notes["follow_up"]), root / row["filename"]))
    return [(pid, *sorted(items)) for pid, items in sorted(by_patient.items()) if len(items) == 2]


PATIENTS = ["1820", "3510", "5567", "8291", "9863"]  # the five with two images (checked below)


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    """The tiny VLM and classifier read the films; retrieval (no image reader) is a stand-in: no index."""
    s = Settings(model_profile="tiny", offline=True, data_dir=tmp_path_factory.mktemp("nih-pairs"),
                 checkpointer_url="memory", tool_timeout_s=300, turn_timeout_s=600, vlm_max_new_tokens=16)
    return build_graph(s, tools=[retrieval([])], builtin_tools=True, plugins=False)


def test_five_patients_have_two_films(shared_data):
    pairs = nih_pairs(shared_data)
    assert [p[0] for p in pairs] == PATIENTS
    pid, (_, prior), (_, current) = next(p for p in pairs if p[0] == "5567")
    assert (prior.name, current.name) == ("00005567_025.png", "00005567_000.png")  # follow_up 15 before 16


@pytest.mark.parametrize("patient", PATIENTS)
def test_each_nih_pair_is_compared_against_its_lower_follow_up(tiny_graph, shared_data, patient):
    pid, (up_prior, prior), (up_current, current) = next(p for p in nih_pairs(shared_data) if p[0] == patient)
    assert up_prior < up_current
    g, cfg = tiny_graph, {"configurable": {"thread_id": f"nih-{patient}"}}
    ids = {}
    for image in sorted((prior, current), key=lambda p: p.name):  # read in file-name order, not follow_up order
        out = g.invoke({"messages": [HumanMessage("Is there a pleural effusion?")], "image": str(image)}, cfg)
        ids[image] = out["study_id"]
    out = g.invoke({"messages": [HumanMessage(ASK)], "study_id": ids[current], "prior_study_id": ids[prior]}, cfg)
    msg = out["messages"][-1]
    cmp = msg.additional_kwargs["cxr"]["comparison"]
    assert cmp["compared"] and cmp["prior_study_id"] == ids[prior] and cmp["study_id"] == ids[current]
    assert cmp["patient"] == "unconfirmed"  # PNGs carry no headers
    assert "Compared with the prior study" in msg.content
    assert "| finding | before | now | change | sources |" in msg.content
    changes = cmp["changes"]
    assert changes and all(c["before"] is not None for c in changes)  # the prior's own read is on the shelf
    comparers = set(runtime(g).roles.comparers)
    for c in changes:  # a direction of change needs a source that compares the films itself
        if c["change"] in ("worse", "improved"):
            assert set(c["agreeing"]) & comparers, c
