"""Report labeler: negation, uncertainty, lists, pseudo-negations, spans, no_finding, IU regressions."""

from __future__ import annotations

import pytest

from knowledge.evidence import FindingCall, Status
from knowledge.labeler import LABELER_VERSION, find_mentions, label_report, label_statuses, present_findings
from knowledge.vocabulary import FINDINGS

P, A, U = Status.present, Status.absent, Status.uncertain


@pytest.fixture(scope="module")
def iu_reports():
    from tools.retrieval.corpus import iu_xray_reports

    return list(iu_xray_reports())


def st(text: str) -> dict[str, Status]:
    return label_statuses(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No pneumothorax or pleural effusion.", {"pneumothorax": A, "pleural_effusion": A, "no_finding": P}),
        ("No focal consolidation, pneumothorax, or large pleural effusion.",
         {"consolidation": A, "pneumothorax": A, "pleural_effusion": A}),
        ("No focal consolidation, suspicious pulmonary opacity, pleural effusion, or pneumothorax.",
         {"consolidation": A, "lung_opacity": A, "pleural_effusion": A, "pneumothorax": A}),
        ("No change in small left pleural effusion.", {"pleural_effusion": P, "no_finding": A}),
        ("The effusion has resolved.", {"pleural_effusion": A}),
        ("Interval resolution of the right pneumothorax.", {"pneumothorax": A}),
        ("The pneumothorax is no longer seen.", {"pneumothorax": A}),
        ("Cannot exclude pneumonia.", {"pneumonia": U, "no_finding": A}),
        ("Pneumonia cannot be excluded.", {"pneumonia": U}),
        ("Early pneumonia is not excluded.", {"pneumonia": U}),
        ("Right basilar opacity may represent atelectasis or pneumonia.",
         {"lung_opacity": P, "atelectasis": U, "pneumonia": U}),
        ("Possible small left effusion.", {"pleural_effusion": U}),
        ("Findings suspicious for pneumonia.", {"pneumonia": U}),
        ("No consolidation to suggest pneumonia.", {"consolidation": A, "pneumonia": A}),
        ("No effusion, but there is a small right pneumothorax.", {"pleural_effusion": A, "pneumothorax": P}),
        ("No pneumothorax; small bilateral pleural effusions.", {"pneumothorax": A, "pleural_effusion": P}),
        ("Atelectasis versus scarring at the left base.", {"atelectasis": U, "fibrosis": U}),
        ("Likely atelectasis at the bases.", {"atelectasis": P}),
        ("Stable cardiomegaly without edema.", {"cardiomegaly": P, "edema": A}),
        ("Heart size normal. Lungs are clear.",
         {"cardiomegaly": A, "lung_opacity": A, "consolidation": A, "no_finding": P}),
        ("The heart is enlarged.", {"cardiomegaly": P}),
        ("Heart size is enlarged.", {"cardiomegaly": P}),
        ("The heart is not enlarged.", {"cardiomegaly": A}),
        ("Borderline cardiomegaly.", {"cardiomegaly": U}),
        ("Heart size is at the upper limits of normal.", {"cardiomegaly": U}),
        ("Normal cardiomediastinal silhouette.", {"cardiomegaly": A, "enlarged_cardiomediastinum": A}),
        ("Widened mediastinum.", {"enlarged_cardiomediastinum": P}),
        ("Calcified granuloma in the right upper lobe.", {"nodule": P}),
        ("Mild pulmonary vascular congestion.", {"edema": P}),  # a mention, as CheXpert counts it
        ("No pulmonary vascular congestion.", {"edema": A}),
        ("Moderate pulmonary edema.", {"edema": P}),
        ("Hyperexpanded lungs consistent with COPD.", {"emphysema": P}),
        ("Healed right rib fractures.", {"fracture": P}),
        ("Small hiatal hernia.", {"hernia": P}),
        ("Left PICC line with tip in the SVC. No pneumothorax.", {"support_devices": P, "pneumothorax": A}),
        ("Endotracheal tube terminates 4 cm above the carina.", {"support_devices": P}),
        ("Left chest pacemaker with leads in the right atrium and ventricle.", {"support_devices": P}),
        ("Right chest XXXX with tip projecting over the lower SVC.", {"support_devices": P}),
        ("Small right PTX.", {"pneumothorax": P}),
        ("There are no XXXX of a pleural effusion.", {"pleural_effusion": A}),
        ("Biapical pleural thickening.", {"pleural_thickening": P}),
        ("Calcified pleural plaques.", {"pleural_other": P}),
        ("Apical scarring.", {"fibrosis": P}),
        ("Small pericardial effusion.", {"no_finding": P}),
        ("No new consolidation.", {"consolidation": A}),
        ("Right lower lobe infiltrate.", {"infiltration": P}),
        ("4 cm mass in the left upper lobe.", {"mass": P}),
        ("Heart size and mediastinal contours are normal.", {"cardiomegaly": A, "enlarged_cardiomediastinum": A}),
        ("Heart size is normal and there is a large right effusion.", {"cardiomegaly": A, "pleural_effusion": P}),
        ("Enlarged cardiomediastinal silhouette.", {"enlarged_cardiomediastinum": P, "cardiomegaly": U}),
        ("There has been clearing of left base airspace opacities.", {"lung_opacity": A}),
        ("Substernal density related to pectus deformity.", {"no_finding": P}),
        ("No evidence of pneumonia. Consider CT to exclude malignancy.", {"pneumonia": A}),
    ],
)
def test_statuses(text: str, expected: dict[str, Status]) -> None:
    got = st(text)
    for finding, status in expected.items():
        assert got.get(finding) == status, f"{text!r}: {finding} -> {got.get(finding)}, expected {status}"


def test_pericardial_effusion_is_not_pleural() -> None:
    assert "pleural_effusion" not in st("Small pericardial effusion.")


def test_unmentioned_findings_get_no_call() -> None:
    got = st("Small left pleural effusion.")
    assert set(got) == {"no_finding", "pleural_effusion"}


def test_one_call_per_finding_present_beats_uncertain_beats_absent() -> None:
    text = "No effusion on the right. Possible small left effusion. Small left pleural effusion is seen."
    calls = [c for c in label_report(text) if c.finding == "pleural_effusion"]
    assert len(calls) == 1 and calls[0].status is P
    text2 = "No right effusion. Possible small left effusion."
    assert st(text2)["pleural_effusion"] is U


def test_spans_point_to_the_mention() -> None:
    text = "Heart size is normal. There is a small left pleural effusion. No pneumothorax."
    calls = {c.finding: c for c in label_report(text)}
    for finding in ("pleural_effusion", "pneumothorax", "cardiomegaly"):
        c = calls[finding]
        assert c.span is not None and c.text == text[c.span[0] : c.span[1]]
    assert calls["pleural_effusion"].text.lower() == "pleural effusion"
    assert calls["pleural_effusion"].span == (text.index("pleural effusion"), text.index("pleural effusion") + 16)
    assert calls["pneumothorax"].span[0] == text.index("pneumothorax")


def test_span_of_winning_mention_is_cited() -> None:
    text = "No effusion on the right. Small left effusion."
    c = next(c for c in label_report(text) if c.finding == "pleural_effusion")
    assert c.status is P and c.span[0] == text.rindex("effusion")


def test_no_finding_logic() -> None:
    assert st("")["no_finding"] is P
    assert st("Normal chest x-XXXX.")["no_finding"] is P
    assert st("No acute cardiopulmonary abnormality. No effusion.")["no_finding"] is P
    assert st("Possible pneumonia.")["no_finding"] is A
    assert st("Cardiomegaly.")["no_finding"] is A
    nf = next(c for c in label_report("Cardiomegaly.") if c.finding == "no_finding")
    assert nf.span is None


def test_calls_are_valid_finding_calls_with_source() -> None:
    calls = label_report("Cardiomegaly. No effusion.", source="vlm")
    assert calls[0].finding == "no_finding"
    for c in calls:
        assert isinstance(c, FindingCall) and c.source == "vlm" and c.score is None
        assert FindingCall.model_validate(c.model_dump()) == c  # constructed calls validate
    assert [c.finding for c in calls] == [f for f in FINDINGS if f in {c.finding for c in calls}]
    assert label_report("Cardiomegaly.")[1].source == "report"


def test_present_findings() -> None:
    assert present_findings("Cardiomegaly. Possible pneumonia. No effusion.") == ["cardiomegaly"]
    assert present_findings("Lungs are clear.") == ["no_finding"]


def test_deterministic_and_version() -> None:
    text = "Moderate cardiomegaly with small bilateral effusions. Cannot exclude pneumonia. No pneumothorax."
    first = [c.model_dump() for c in label_report(text)]
    for _ in range(3):
        assert [c.model_dump() for c in label_report(text)] == first
    assert isinstance(LABELER_VERSION, str) and LABELER_VERSION


def test_mentions_carry_sentence_and_cue() -> None:
    text = "Heart is normal. Cannot exclude pneumonia."
    m = next(m for m in find_mentions(text) if m.finding == "pneumonia")
    assert text[m.sentence[0] : m.sentence[1]].startswith("Cannot exclude") and m.status is U and m.cue


def test_prefilter_changes_nothing_on_iu(iu_reports) -> None:
    """The keyword prefilter is a pure speed-up: same mentions with and without it (every 2nd IU report)."""
    for r in iu_reports[::2]:
        assert find_mentions(r.text) == find_mentions(r.text, prefilter=False), r.id


def test_each_sentence_is_labelled_as_if_alone(iu_reports) -> None:
    """What lets find_mentions run ConText only on the sentences that need it: a report's mentions are
    exactly its sentences' mentions, each sentence labelled on its own (every 3rd IU report)."""
    from dataclasses import replace

    from knowledge.labeler import _SENTENCE

    for r in iu_reports[::3]:
        alone = []
        for s in _SENTENCE.finditer(r.text.lower()):
            for m in find_mentions(r.text[s.start() : s.end()]):
                alone.append(replace(m, start=m.start + s.start(), end=m.end + s.start(), sentence=s.span()))
        assert find_mentions(r.text) == sorted(alone, key=lambda m: (m.start, m.end, m.finding)), r.id


def test_a_report_of_normal_statements_needs_no_context() -> None:
    text = "Heart size is normal. The lungs are clear."
    assert {m.cue for m in find_mentions(text)} == {"normal statement"}
    # beside a sentence that needs ConText, they are decided the same way
    mixed = find_mentions(text + " No pleural effusion. Possible mild edema.")
    assert {(m.finding, m.status) for m in mixed} >= {("pleural_effusion", A), ("edema", U), ("cardiomegaly", A)}


def test_macro_f1_vs_mesh_floor(iu_reports) -> None:
    """Regression guard: labeler vs the IU reports' MeSH indexing stays above a floor (bench/labeler.py)."""
    from bench.labeler import evaluate, macro_f1

    table = evaluate(iu_reports)
    m, kept = macro_f1(table, min_support=10)
    assert {"cardiomegaly", "pleural_effusion", "atelectasis", "nodule"} <= set(kept)
    assert m >= 0.85, {f: round(table[f]["f1"], 3) for f in kept}
    for f in ("cardiomegaly", "pleural_effusion", "atelectasis", "emphysema"):
        assert table[f]["f1"] >= 0.9, (f, table[f])


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        (["normal"], set()),
        (["Cardiomegaly/mild", "Pleural Effusion/bilateral/small"], {"cardiomegaly", "pleural_effusion"}),
        (["Calcified Granuloma/lung/upper lobe/left"], {"nodule"}),
        (["Cicatrix/lung/base/left", "Pulmonary Disease, Chronic Obstructive"], {"fibrosis", "emphysema"}),
        (["Emphysema/subcutaneous"], set()),
        (["Density/breast"], set()),
        (["Cardiac Shadow/enlarged"], {"cardiomegaly"}),
        (["Mediastinum/prominent/mild"], {"enlarged_cardiomediastinum"}),
        (["Thickening/pleura/apex"], {"pleural_thickening"}),
        (["Surgical Instruments/abdomen", "Catheters, Indwelling/right"], {"support_devices"}),
    ],
)
def test_mesh_mapping(terms: list[str], expected: set[str]) -> None:
    from knowledge.mesh import mesh_findings

    assert mesh_findings(terms) == expected
