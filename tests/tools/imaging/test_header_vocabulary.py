"""Header text is never echoed: modality, body part, view position, photometric interpretation and
manufacturer reach metadata, refusal messages and logs only as terms of a fixed vocabulary."""

from __future__ import annotations

import json
import logging

import pytest
from imaging_helpers import make_dicom

from tools.ingestion.deid import body_part_term, vendor
from tools.ingestion.loader import NotAChestRadiograph, load_study

PHI = "QUILLON"  # a patient's surname typed into a coded field


def _leaks(text: str) -> bool:
    return PHI.lower() in text.lower()


@pytest.mark.parametrize(
    "tags",
    [
        {"BodyPartExamined": f"CHEST {PHI} MRN 4471"},
        {"BodyPartExamined": f"{PHI}^JANE"},
        {"ViewPosition": f"{PHI}"},
        {"Manufacturer": f"Dr {PHI} Private Clinic"},
        {"Modality": "OT", "BodyPartExamined": f"BED 12 {PHI}"},
    ],
)
def test_free_text_in_coded_tags_never_reaches_metadata_or_logs(tags, caplog):
    data = make_dicom(**tags)  # pydicom itself warns about the odd value while the test builds the file
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    study = load_study(data)
    blob = json.dumps(study.metadata) + repr(study) + caplog.text
    assert not _leaks(blob), blob
    assert study.metadata["body_part"] in {"CHEST", "OTHER"}
    assert study.metadata.get("view_position", "OTHER") in {"OTHER"} | {"PA", "AP"}
    assert study.metadata["manufacturer"] == "other"


@pytest.mark.parametrize(
    ("tags", "says"),
    [
        ({"Modality": f"{PHI}"}, "another modality"),
        ({"Modality": f"CT{PHI}"}, "another modality"),
        ({"BodyPartExamined": f"HAND {PHI}"}, "of the hand"),
        ({"BodyPartExamined": f"{PHI} KNEE"}, "of the knee"),
    ],
)
def test_refusals_name_a_fixed_term_never_the_header_text(tags, says, caplog):
    data = make_dicom(**tags)
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    with pytest.raises(NotAChestRadiograph) as info:
        load_study(data)
    assert says in str(info.value)
    assert not _leaks(str(info.value) + caplog.text)


def test_vocabularies():
    assert body_part_term("Thorax") == "chest" and body_part_term("PELVIS") == "pelvis"
    assert body_part_term("Mr Smith") == "other" and body_part_term("") is None
    assert vendor("SIEMENS Healthineers") == "Siemens" and vendor("GE MEDICAL SYSTEMS") == "GE"
    assert vendor("Acme Imaging") == "other"
    study = load_study(make_dicom(Manufacturer="Agfa-Gevaert", ViewPosition="AP"))
    assert study.metadata["manufacturer"] == "Agfa" and study.metadata["view_position"] == "AP"
