"""A sentence without a negation, uncertainty, hypothetical or history cue is labelled without spaCy/ConText."""

from __future__ import annotations

import pytest

import knowledge.labeler as labeler
from knowledge.evidence import Status
from knowledge.labeler import find_mentions


@pytest.fixture
def no_context(monkeypatch):
    """ConText made unavailable: labelling that still needs it fails loudly."""
    def refuse():
        raise AssertionError("ConText was needed")

    monkeypatch.setattr(labeler, "context", refuse)


def test_a_sentence_without_a_status_cue_is_decided_without_context(no_context) -> None:
    text = "Stable 7 mm nodule in the right upper lobe. Mild cardiomegaly. Heart size is normal."
    found = {(m.finding, m.status, m.cue) for m in find_mentions(text, memo=False)}
    assert ("nodule", Status.present, "affirmed") in found
    assert ("cardiomegaly", Status.present, "affirmed") in found


@pytest.mark.parametrize("text", ["No pleural effusion.", "Cannot see a pleural effusion.", "Effusion?",
                                  "The effusion has  resolved.", "Pleural effusion versus atelectasis."])
def test_a_sentence_with_a_status_cue_still_goes_to_context(no_context, text: str) -> None:
    with pytest.raises(AssertionError, match="ConText was needed"):
        find_mentions(text, memo=False)


@pytest.mark.parametrize("text", ["Cannot see a pleural effusion.", "No change in the small left effusion.",
                                  "Stable 12 mm nodule, not calcified.", "?Pneumonia in the left base.",
                                  "Opacity and/or atelectasis at the bases.", "Borderline heart size.",
                                  "Pneumothorax:no.", "Nodule, ?granuloma.", "No\u00a0pleural effusion.",
                                  "Mass vs. atelectasis.", "Consolidation/pneumonia not excluded."])
def test_the_cue_prefilter_changes_no_label(text: str) -> None:
    assert find_mentions(text, memo=False) == find_mentions(text, prefilter=False)
