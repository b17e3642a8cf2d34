"""Exports describe one study's current decisions, not the last turn: the SR/FHIR of a chosen study, each
Markdown turn naming its study, and a reply's headings nested under its turn."""

from __future__ import annotations

import json
from dataclasses import replace

from ui_helpers import sample_decisions, sample_evidence

from knowledge.evidence import Decision, Status
from ui.exports import (
    conversation_markdown,
    findings_json,
    latest_findings_turn,
    nest_headings,
    report_text,
    studies_with_findings,
)
from ui.turn import TurnResult

A, B = "a" * 64, "b" * 64


def _turn(text: str, study: str, intent: str, reply: str, decisions: list[Decision]) -> TurnResult:
    return TurnResult(user_text=text, reply=reply, study_id=study, cxr={"study_id": study, "intent": intent},
                      decisions=decisions, evidence=sample_evidence())


def _conversation() -> list[TurnResult]:
    effusion_only = [Decision(finding="pleural_effusion", status=Status.present, confidence=0.9)]
    return [
        _turn("Write a report", A, "report", "## Report\nSmall effusion.", sample_decisions()),
        _turn("Where is the effusion?", A, "locate", "Left base.", sample_decisions()),
        _turn("Write a report", B, "report", "## Report\nClear lungs.", effusion_only),
        TurnResult(user_text="and the heart?", stopped=True, study_id=B),
    ]


def test_the_export_of_a_study_uses_its_latest_turn_and_its_report():
    turns = _conversation()
    assert studies_with_findings(turns) == [A, B]
    first = latest_findings_turn(turns, A)
    assert first is turns[1]  # the follow-up about study A, not the later study B
    assert report_text(turns, first) == "## Report\nSmall effusion."  # the report, not the follow-up's answer
    assert latest_findings_turn(turns, B) is turns[2]
    assert latest_findings_turn(turns) is turns[2]


def test_the_sr_and_fhir_carry_the_chosen_studys_decisions(shared_data):
    from ui_helpers import nih_png

    from tools.ingestion.loader import load_study
    from ui.exports import fhir_report_json

    study = load_study(nih_png(shared_data).read_bytes(), filename="x.png")
    turns = _conversation()
    turns = [replace(t, study_id=study.id, cxr={**t.cxr, "study_id": study.id}) if t.study_id == A else t for t in turns]
    fhir = fhir_report_json(turns, study, demo=True)
    assert "pneumothorax" in fhir.lower()  # study A's decisions (study B decided only the effusion)
    only = [Decision(finding="cardiomegaly", status=Status.absent, confidence=0.8)]
    fhir = fhir_report_json(turns, study, demo=True, decisions=only)  # the state's current decisions win
    assert "pneumothorax" not in fhir.lower() and "cardiomegaly" in fhir.lower()


def test_every_markdown_turn_names_its_study_and_headings_nest():
    md = conversation_markdown(_conversation(), study_labels={A: "Study 1 · PA", B: "Study 2"})
    turns = md.split("### Turn ")[1:]
    assert [t.split("**Study:** ")[1].split("\n")[0] for t in turns] == ["Study 1 · PA", "Study 1 · PA", "Study 2", "Study 2"]
    assert "#### Report" in md and "\n## Report" not in md  # a reply's heading sits under its turn
    assert "stopped; no answer kept" in turns[3]
    assert nest_headings("# A\ntext # not a heading\n###### deep", 3) == "#### A\ntext # not a heading\n###### deep"


def test_a_conversation_of_several_studies_describes_each_not_only_the_one_on_screen():
    facts = {"Study 1 · PA": {"View": "PA", "Size": "440 x 440"}, "Study 2": {"View": "AP", "Size": "512 x 512"}}
    md = conversation_markdown(_conversation(), study_facts=facts["Study 2"], studies_facts=facts,
                               study_labels={A: "Study 1 · PA", B: "Study 2"})
    head = md.split("## Conversation", 1)[0]
    assert "## Study (de-identified)" not in head and "## Studies (de-identified)" in head
    assert head.index("### Study 1 · PA") < head.index("- **View**: PA") < head.index("### Study 2")
    one = conversation_markdown(_conversation(), study_facts=facts["Study 2"], studies_facts={"Study 2": facts["Study 2"]})
    assert "## Study (de-identified)" in one and "## Studies" not in one
    doc = json.loads(findings_json(_conversation(), study_facts=facts["Study 2"], studies_facts=facts))
    assert doc["studies"] == facts
