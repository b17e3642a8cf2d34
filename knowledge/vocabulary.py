"""The one finding vocabulary every tool's output is mapped onto."""

from __future__ import annotations

import re

FINDINGS: tuple[str, ...] = (
    "no_finding",
    "enlarged_cardiomediastinum",
    "cardiomegaly",
    "lung_opacity",
    "lung_lesion",
    "nodule",
    "mass",
    "edema",
    "consolidation",
    "pneumonia",
    "infiltration",
    "atelectasis",
    "pneumothorax",
    "pleural_effusion",
    "pleural_thickening",
    "pleural_other",
    "emphysema",
    "fibrosis",
    "hernia",
    "fracture",
    "support_devices",
)
FINDING_SET = frozenset(FINDINGS)

DISPLAY_NAMES: dict[str, str] = {
    "no_finding": "No finding",
    "enlarged_cardiomediastinum": "Enlarged cardiomediastinum",
    "cardiomegaly": "Cardiomegaly",
    "lung_opacity": "Lung opacity",
    "lung_lesion": "Lung lesion",
    "nodule": "Nodule",
    "mass": "Mass",
    "edema": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "infiltration": "Infiltration",
    "atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "pleural_effusion": "Pleural effusion",
    "pleural_thickening": "Pleural thickening",
    "pleural_other": "Other pleural abnormality",
    "emphysema": "Emphysema",
    "fibrosis": "Fibrosis",
    "hernia": "Hernia",
    "fracture": "Fracture",
    "support_devices": "Support devices",
}

# Synonyms and abbreviations seen in real reports and label sets -> canonical id.
# Keys are compared after _key() (lower case, separators collapsed, simple plural folded).
SYNONYMS: dict[str, str] = {
    "no finding": "no_finding",
    "normal": "no_finding",
    "enlarged cardiomediastinum": "enlarged_cardiomediastinum",
    "widened mediastinum": "enlarged_cardiomediastinum",
    "cardiomegaly": "cardiomegaly",
    "enlarged heart": "cardiomegaly",
    "lung opacity": "lung_opacity",
    "opacity": "lung_opacity",
    "airspace opacity": "lung_opacity",
    "lung lesion": "lung_lesion",
    "lesion": "lung_lesion",
    "nodule": "nodule",
    "pulmonary nodule": "nodule",
    "mass": "mass",
    "edema": "edema",
    "oedema": "edema",
    "pulmonary edema": "edema",
    "consolidation": "consolidation",
    "pneumonia": "pneumonia",
    "infiltration": "infiltration",
    "infiltrate": "infiltration",
    "atelectasis": "atelectasis",
    "pneumothorax": "pneumothorax",
    "ptx": "pneumothorax",
    "pleural effusion": "pleural_effusion",
    "effusion": "pleural_effusion",
    "pleural thickening": "pleural_thickening",
    "pleural other": "pleural_other",
    "emphysema": "emphysema",
    "fibrosis": "fibrosis",
    "hernia": "hernia",
    "hiatal hernia": "hernia",
    "fracture": "fracture",
    "support devices": "support_devices",
    "support device": "support_devices",
}


def _key(name: str) -> str:
    key = re.sub(r"[\s_\-/]+", " ", name.strip().lower())
    return key


def _singular(key: str) -> str:
    words = key.split(" ")
    last = words[-1]
    if last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif last.endswith("es") and last[:-2].endswith(("ss", "x", "sh", "ch")):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith(("ss", "us", "is")):
        last = last[:-1]
    return " ".join([*words[:-1], last])


def normalize(name: str) -> str | None:
    """Map a label or phrase ("Effusion", "pleural effusions", "PTX") onto a canonical id, or None."""
    if not isinstance(name, str) or not name.strip():
        return None
    key = _key(name)
    if key.replace(" ", "_") in FINDING_SET:
        return key.replace(" ", "_")
    for candidate in (key, _singular(key)):
        if candidate in SYNONYMS:
            return SYNONYMS[candidate]
        if candidate.replace(" ", "_") in FINDING_SET:
            return candidate.replace(" ", "_")
    return None


def display_name(finding: str) -> str:
    return DISPLAY_NAMES.get(finding, finding.replace("_", " ").capitalize())
