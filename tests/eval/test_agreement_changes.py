"""`eval agreement` on the change since the prior: reviews of compared studies are signed and exported by the
review code, and the change table's kappa, changed and flagged counts are checked against sklearn and the
readers' actions; an export without changes reads as before; bad change values name their line."""

from __future__ import annotations

import hashlib
import json

import pytest
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from agents.review import Reviewer, ReviewStore, SignedReview
from agents.review.export import rows as export_rows
from agents.review.model import Review
from cli.main import app
from cxr_agent import settings as settings_module
from eval.agreement import (
    CAVEAT,
    NO_CHANGE_SIGNED,
    OVERALL,
    AgreementError,
    agreement,
    change_agreement,
    read_rows,
)
from knowledge.evidence import Decision, Status

READER = Reviewer.from_identity(type("Identity", (), {"id": "dr-lee", "name": "Ann Lee", "org": "Radiology Dept"})())
EFF, CARDIO = "pleural_effusion", "cardiomegaly"

# One compared study per entry: finding -> (AI change, flagged for review, the reader's act, the value set).
# "kept" is no action (an unflagged change signs as drafted).
READINGS: list[dict[str, tuple[str, bool, str, str | None]]] = [
    {EFF: ("cannot_compare", True, "set", "stable"), CARDIO: ("improved", False, "accept", None)},
    {EFF: ("worse", False, "accept", None), CARDIO: ("stable", False, "reject", None)},
    {EFF: ("resolved", False, "set", "improved"), CARDIO: ("stable", False, "kept", None)},
    {EFF: ("cannot_compare", True, "accept", None), CARDIO: ("new", False, "accept", None)},
    {EFF: ("worse", False, "kept", None), CARDIO: ("worse", True, "set", "stable")},
]


def _id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _signed(n: int, reading: dict[str, tuple[str, bool, str, str | None]] | None) -> SignedReview:
    """A signed review of study ``n``: effusion and the heart present, no pneumothorax; compared with a prior
    when ``reading`` gives the AI's changes and what the reader did with each."""
    decisions = [Decision(finding=EFF, status=Status.present, confidence=0.8),
                 Decision(finding=CARDIO, status=Status.present, confidence=0.7),
                 Decision(finding="pneumothorax", status=Status.absent, confidence=0.9)]
    changes = [{"finding": f, "change": ai, "confidence": 0.7, "needs_review": flagged}
               for f, (ai, flagged, _, _) in (reading or {}).items()]
    review = Review.draft(thread_id=f"t{n}", study_id=_id(f"study{n}"), reviewer=READER, decisions=decisions,
                          prior_study_id=_id(f"prior{n}") if changes else None, changes=changes)
    for f, (_, _, act, value) in (reading or {}).items():
        if act == "accept":
            review.accept_change(f)
        elif act == "reject":
            review.reject_change(f)
        elif act == "set":
            review.set_change(f, str(value))
    if n == 1:
        review.reject(CARDIO, note="normal heart size")  # a status the reader changed
    return review.sign()


def _signed_change(ai: str, act: str, value: str | None) -> str:
    return {"reject": NO_CHANGE_SIGNED, "set": value}.get(act) or ai


@pytest.fixture(scope="module")
def signed() -> list[SignedReview]:
    return [_signed(n, r) for n, r in enumerate(READINGS)] + [_signed(len(READINGS), None)]


def test_change_kappa_changed_and_flagged_per_finding_and_overall(signed):
    rows = [r for s in signed for r in export_rows(s)]
    assert sum("change" in r for r in rows) == 10  # pneumothorax and the uncompared study carry none
    got = {c.finding: c for c in change_agreement(rows)}
    assert list(got) == [CARDIO, EFF, OVERALL]
    ai = {f: [r[f][0] for r in READINGS] for f in (EFF, CARDIO)}
    reader = {f: [_signed_change(r[f][0], r[f][2], r[f][3]) for r in READINGS] for f in (EFF, CARDIO)}
    for f in (EFF, CARDIO):
        assert got[f].n == 5
        assert got[f].kappa == pytest.approx(cohen_kappa_score(ai[f], reader[f]))
    assert got[OVERALL].kappa == pytest.approx(cohen_kappa_score(ai[EFF] + ai[CARDIO], reader[EFF] + reader[CARDIO]))
    # the AI's cannot-compare rows count (n), and one the reader accepted is kept, not changed
    assert [(c.finding, c.n, c.changed, c.flagged) for c in got.values()] == [
        (CARDIO, 5, 2, 1), (EFF, 5, 2, 2), (OVERALL, 10, 4, 3)]
    assert change_agreement([r for r in rows if "change" not in r]) == []


def test_the_status_table_ignores_the_change_rows(signed):
    rows = [r for s in signed for r in export_rows(s)]
    plain = [{k: v for k, v in r.items() if k != "change"} for r in rows]
    assert agreement(rows) == agreement(plain)
    assert {a.finding: a.changed for a in agreement(rows)} == {CARDIO: 1, EFF: 0, "pneumothorax": 0}


def test_an_export_without_changes_writes_what_it_wrote_before(tmp_path):
    rows = [("present", "present"), ("absent", "absent"), ("present", "absent"), ("absent", "absent")]
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps({"finding": "pleural_effusion", "ai_status": a, "signed_status": s}) + "\n"
                            for a, s in rows), encoding="utf-8")
    out = tmp_path / "agr"
    out.mkdir()
    (out / "agreement-changes.json").write_text("{}")  # an earlier run's change table
    res = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["eval", "agreement", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    expected = {"caveat": CAVEAT, "findings": [{"finding": "pleural_effusion", "n": 4, "kappa": 0.5,
                                                "sensitivity": 1.0, "specificity": 2 / 3, "changed": 1}]}
    assert (out / "agreement.json").read_text(encoding="utf-8") == json.dumps(expected, indent=2)
    assert sorted(p.name for p in out.iterdir()) == ["agreement.json", "agreement.png"]
    assert "since the prior" not in res.output and res.output.count("saw the AI draft") == 1
    assert " ".join(res.output.split()).endswith(f"wrote {out / 'agreement.json'} and {out / 'agreement.png'}")


@pytest.fixture
def exported(signed, settings, monkeypatch, tmp_path):
    """The signed reviews in the store, written by `cxr-agent review export`."""
    monkeypatch.setenv("CXR_AGENT_DATA_DIR", str(settings.data_dir))
    settings_module.get_settings.cache_clear()
    store = ReviewStore.for_settings(settings)
    for s in signed:
        store.save_signed(s)
    path = tmp_path / "reviews.jsonl"
    res = CliRunner().invoke(app, ["review", "export", "--out", str(path)])
    assert res.exit_code == 0 and "wrote 18 finding row(s)" in res.output, res.output
    yield path
    settings_module.get_settings.cache_clear()


def test_the_cli_prints_and_writes_the_change_table(exported, tmp_path):
    out = tmp_path / "agr"
    res = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["eval", "agreement", str(exported), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = res.output
    assert text.index("AI draft vs signed result") < text.index("Change since the prior: AI vs signed")
    assert "'cannot compare' is a category of its own" in text and text.count("saw the AI draft") == 1
    overall = next(ln for ln in text.splitlines() if OVERALL in ln)
    kappa = change_agreement(read_rows(exported))[-1].kappa
    assert [c.strip() for c in overall.split("│")[1:-1]] == [OVERALL, "10", f"{kappa:.3f}", "4", "3"]
    table = json.loads((out / "agreement-changes.json").read_text(encoding="utf-8"))
    assert table["caveat"] == CAVEAT and NO_CHANGE_SIGNED in table["categories"]["signed"]
    assert [f["finding"] for f in table["findings"]] == [CARDIO, EFF]
    assert (table["overall"]["n"], table["overall"]["changed"], table["overall"]["flagged"]) == (10, 4, 3)
    assert (out / "agreement-changes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "agreement.json").read_text())["findings"][0]["finding"] == CARDIO
    assert " ".join(text.split()).endswith(f"wrote {out / 'agreement.json'}, {out / 'agreement.png'}, "
                                           f"{out / 'agreement-changes.json'} and {out / 'agreement-changes.png'}")


@pytest.mark.parametrize(("change", "message"), [
    (["stable", "stable"], r"rows.jsonl:2: change must be a mapping with ai, signed \(got list\)"),
    (None, r"rows.jsonl:2: change must be a mapping with ai, signed \(got NoneType\)"),
    ({"ai": "bigger", "signed": "stable"}, r"rows.jsonl:2: change ai 'bigger' is not one of new, worse, stable, "
                                           r"improved, resolved, cannot_compare$"),
    ({"ai": "stable", "signed": "cannot compare"}, r"rows.jsonl:2: change signed 'cannot compare' is not one of "
                                                   r"new, .*cannot_compare \(or null: no change signed\)"),
    ({"ai": "stable"}, r"rows.jsonl:2: change needs signed"),
    ({"ai": "stable", "signed": None, "flagged": "yes"}, r"rows.jsonl:2: change flagged must be true or false"),
])
def test_a_bad_change_names_its_line(tmp_path, change, message):
    path = tmp_path / "rows.jsonl"
    good = {"finding": EFF, "ai_status": "present", "signed_status": "present",
            "change": {"ai": "stable", "signed": None, "action": "rejected", "flagged": False}}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "change": change}) + "\n", encoding="utf-8")
    with pytest.raises(AgreementError, match=message):
        read_rows(path)
    res = CliRunner().invoke(app, ["eval", "agreement", str(path), "--out", str(tmp_path / "agr")])
    assert res.exit_code == 1 and "rows.jsonl:2: change" in res.output
    assert not (tmp_path / "agr").exists()
