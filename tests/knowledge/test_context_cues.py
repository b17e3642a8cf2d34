"""ConText scopes in the labeler: clause scope, terminators, pseudo-cues, history/hypothetical."""

from __future__ import annotations

import pytest

from knowledge.context_cues import CUES, _rules, context
from knowledge.evidence import Status
from knowledge.labeler import find_mentions, label_statuses

P, A, U = Status.present, Status.absent, Status.uncertain


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an uncertainty cue ends the negation's scope (v1.0 ran the negation to the end of the clause)
        ("No pneumothorax, possible small effusion.", {"pneumothorax": A, "pleural_effusion": U}),
        ("No pneumothorax, may be a small effusion.", {"pneumothorax": A, "pleural_effusion": U}),
        ("No effusion, probable right lower lobe pneumonia.", {"pleural_effusion": A, "pneumonia": U}),
        # an adjective hedge inside a negated list does not
        ("No focal consolidation, suspicious opacity, or effusion.",
         {"consolidation": A, "lung_opacity": A, "pleural_effusion": A}),
        # terminators end the negation
        ("No pleural effusion however there is a small pneumothorax.", {"pleural_effusion": A, "pneumothorax": P}),
        ("Without edema; moderate cardiomegaly.", {"edema": A, "cardiomegaly": P}),
        # negation after the mention stays inside its window
        ("Right pneumothorax has resolved.", {"pneumothorax": A}),
        ("Left effusion is not seen on this study.", {"pleural_effusion": A}),
        # pseudo-negation
        ("No significant change in the moderate right effusion.", {"pleural_effusion": P}),
        # hypothetical and history
        ("Evaluate for pneumonia.", {"pneumonia": U}),
        ("History of pneumothorax.", {"pneumothorax": U}),
        # CheXpert: "versus" and "and/or" are uncertain, a plain "or" in an affirmative clause is not
        ("Atelectasis and/or scarring at the bases.", {"atelectasis": U, "fibrosis": U}),
        ("Bibasilar atelectasis or scarring.", {"atelectasis": P, "fibrosis": P}),
        ("Streaky opacities which may represent atelectasis or scarring.", {"atelectasis": U, "fibrosis": U}),
        # "with" inside "compatible with" does not end the hedge; a backward hedge
        ("Right base opacity which may be compatible with pneumonia.", {"lung_opacity": P, "pneumonia": U}),
        ("Pneumonia would be a consideration.", {"pneumonia": U}),
        ("Opacity consistent with pneumonia.", {"pneumonia": P}),
        # the scope stays in its sentence
        ("No effusion. Pneumothorax on the right.", {"pleural_effusion": A, "pneumothorax": P}),
    ],
)
def test_context_scopes(text: str, expected: dict[str, Status]) -> None:
    got = label_statuses(text)
    for finding, status in expected.items():
        assert got.get(finding) == status, f"{text!r}: {finding} -> {got.get(finding)}, expected {status}"


def test_cue_names_the_modifier() -> None:
    m = next(m for m in find_mentions("No pneumothorax, possible small effusion.") if m.finding == "pleural_effusion")
    assert m.cue == "possible" and m.status is U


def test_each_cue_literal_once_and_rules_build() -> None:
    literals = [lit for group in CUES for lit in group[0]]
    assert len(literals) == len(set(literals))
    assert len(_rules()) == len(literals)
    nlp, ctx = context()
    assert nlp.lang == "en" and not nlp.pipe_names  # blank tokenizer, no downloaded model
