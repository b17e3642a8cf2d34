"""Two studies read in one ingest: order and interval from their headers, salted patient keys, and the
wrong-patient guard that compares them; through graph.invoke, a pair gives the interval and a key
mismatch is refused."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from graph_scripted import ScriptedVLM, classifier
from langchain_core.messages import HumanMessage

from agents.comparing.pair import MAX_PAIRS, StudyPair, as_pairs, merge_pairs, ordered_pair
from agents.comparing.patient import patient_key, same_patient
from graph import runtime
from tools.ingestion.study import Study

SALT = b"0123456789abcdef0123456789abcdef"


def test_patient_key_is_salted_and_covers_the_issuer():
    k = patient_key("12345", "HOSP-A", salt=SALT)
    assert k == patient_key(" 12345 ", "HOSP-A", salt=SALT) and "12345" not in k
    assert k != patient_key("12345", "HOSP-B", salt=SALT)  # same number, other issuer: another patient
    assert k != patient_key("12345", "HOSP-A", salt=SALT[::-1])  # another conversation's salt: unlinkable
    assert patient_key("", "HOSP-A", salt=SALT) is None and patient_key(None, None, salt=SALT) is None
    with pytest.raises(ValueError, match="at least 16 random bytes"):
        patient_key("1", None, salt=b"short")


def test_same_patient_compares_keys_and_headers():
    a, b = patient_key("1", "H", salt=SALT), patient_key("2", "H", salt=SALT)
    male50 = {"patient_sex": "M", "patient_age": "50-59"}
    assert same_patient(male50, male50, (a, b)).verdict == "mismatch"
    assert "different patient ids" in same_patient({}, {}, (a, b)).reason
    same = same_patient(male50, male50, (a, a))
    assert same.verdict == "consistent" and "same patient id" in same.reason
    assert same_patient({}, {}, (a, a)).verdict == "consistent"  # the id alone, without sex or age
    assert same_patient({"patient_sex": "F"}, male50, (a, a)).verdict == "mismatch"  # the headers still count
    assert same_patient({}, {}, (a, None)).verdict == "unconfirmed"  # one key only: cannot be compared
    assert same_patient({}, {}).verdict == "unconfirmed"


def test_ordered_pair_reads_order_and_interval_from_the_dates():
    jan, mar = datetime(2026, 1, 10, 9), datetime(2026, 3, 1, 8)
    pair = ordered_pair(("cur", mar, "k2"), ("pri", jan, "k1"))
    assert pair == StudyPair(prior_study_id="pri", study_id="cur", interval_days=49, prior_key="k1", current_key="k2")
    assert ordered_pair(("a", jan, None), ("b", None, None)) is None  # a date missing: the reader says
    assert ordered_pair(("a", jan, None), ("b", jan, None)) is None  # same moment: no order
    with pytest.raises(ValueError):
        StudyPair(prior_study_id="a", study_id="b", interval_days=-1)


def test_pairs_channel_keeps_plain_dicts_and_the_newest():
    merged = merge_pairs({"x": StudyPair(prior_study_id="p", study_id="x")},
                         {f"s{i}": {"prior_study_id": "p", "study_id": f"s{i}"} for i in range(MAX_PAIRS)})
    assert len(merged) == MAX_PAIRS and "x" not in merged and isinstance(merged["s0"], dict)
    assert as_pairs(merged)["s0"].prior_study_id == "p" and as_pairs(None) == {}
    with pytest.raises(ValueError, match="pairs must map a current study id"):
        merge_pairs({}, 5)
    with pytest.raises(ValueError, match="pairs holds a malformed StudyPair .*prior_study_id"):
        merge_pairs({}, {"x": {"study_id": "x"}})


def _study(seed: int, **meta: str) -> Study:
    pixels = np.random.default_rng(seed).random((64, 64)).astype(np.float32)
    return Study.from_array(pixels, view="PA", metadata=meta)  # type: ignore[arg-type]


def _converse(make_graph, thread, pair_of, **meta):
    g = make_graph(ScriptedVLM(), classifier({"pleural_effusion": 0.3}), router_semantic=False)
    cfg = thread()
    prior_id, current_id = (runtime(g).studies.put(_study(i, **meta)) for i in (1, 2))
    g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": prior_id}, cfg)
    out = g.invoke({"messages": [HumanMessage("Compared with the prior, what has changed?")], "study_id": current_id,
                    "pairs": {current_id: pair_of(prior_id, current_id).model_dump()}}, cfg)
    return out, out["messages"][-1]


def test_a_pair_read_in_one_ingest_gives_the_interval_through_graph_invoke(make_graph, thread):
    key = patient_key("7", "H", salt=SALT)
    out, msg = _converse(make_graph, thread, lambda p, c: StudyPair(prior_study_id=p, study_id=c, interval_days=50,
                                                                    prior_key=key, current_key=key))
    cmp = msg.additional_kwargs["cxr"]["comparison"]
    assert cmp["compared"] and cmp["order"] == "headers" and cmp["interval_days"] == 50
    assert cmp["patient"] == "consistent" and not cmp["named_by_reader"]
    assert "taken 50 days earlier" in msg.content and "The order is yours" not in msg.content
    assert out["pairs"][out["study_id"]]["interval_days"] == 50  # kept in the thread


def test_a_pair_with_different_patient_keys_is_refused(make_graph, thread):
    _, msg = _converse(make_graph, thread, lambda p, c: StudyPair(
        prior_study_id=p, study_id=c, interval_days=3, prior_key=patient_key("7", "H", salt=SALT),
        current_key=patient_key("8", "H", salt=SALT)), patient_sex="M")
    cmp = msg.additional_kwargs["cxr"]["comparison"]
    assert not cmp["compared"] and cmp["patient"] == "mismatch"
    assert "Not compared: the two studies' headers give different patient ids" in msg.content
