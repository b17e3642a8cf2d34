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
    # --- added by the labeler owner: phrasing of real reports and other label sets ---
    "no findings": "no_finding",
    "normal chest": "no_finding",
    "normal study": "no_finding",
    "mediastinal widening": "enlarged_cardiomediastinum",
    "enlarged mediastinum": "enlarged_cardiomediastinum",
    "enlarged cardiomediastinal silhouette": "enlarged_cardiomediastinum",
    "cardiac enlargement": "cardiomegaly",
    "enlarged cardiac silhouette": "cardiomegaly",
    "heart enlargement": "cardiomegaly",
    "heart size enlarged": "cardiomegaly",
    "heart size is enlarged": "cardiomegaly",
    "heart is enlarged": "cardiomegaly",
    "cardiomegally": "cardiomegaly",
    "airspace disease": "lung_opacity",
    "air space disease": "lung_opacity",
    "air space opacity": "lung_opacity",
    "pulmonary opacity": "lung_opacity",
    "opacification": "lung_opacity",
    "density": "lung_opacity",
    "ground glass opacity": "lung_opacity",
    "ggo": "lung_opacity",
    "lung nodule": "nodule",
    "nodular opacity": "nodule",
    "granuloma": "nodule",  # a (calcified) granuloma is a benign nodule; see knowledge/labeler.py
    "calcified granuloma": "nodule",
    "calcified nodule": "nodule",
    "lung mass": "mass",
    "pulmonary mass": "mass",
    "tumor": "mass",
    "tumour": "mass",
    "interstitial edema": "edema",
    "pulmonary oedema": "edema",
    "vascular congestion": "edema",
    "pulmonary vascular congestion": "edema",
    "pulmonary congestion": "edema",
    "chf": "edema",
    "congestive heart failure": "edema",
    "airspace consolidation": "consolidation",
    "infiltrates": "infiltration",
    "pulmonary infiltrate": "infiltration",
    "collapse": "atelectasis",
    "lung collapse": "atelectasis",
    "pneumothoraces": "pneumothorax",
    "pneumothoraxes": "pneumothorax",
    "pleural fluid": "pleural_effusion",
    "hydrothorax": "pleural_effusion",
    "thickened pleura": "pleural_thickening",
    "pleural plaque": "pleural_other",
    "pleural calcification": "pleural_other",
    "fibrothorax": "pleural_other",
    "pleural scar": "pleural_other",
    "copd": "emphysema",
    "chronic obstructive pulmonary disease": "emphysema",
    "emphysematous change": "emphysema",
    "pulmonary emphysema": "emphysema",
    "pulmonary fibrosis": "fibrosis",
    "scarring": "fibrosis",  # focal scarring is focal fibrosis (MeSH: Cicatrix); see knowledge/labeler.py
    "scar": "fibrosis",
    "cicatrix": "fibrosis",
    "interstitial fibrosis": "fibrosis",
    "diaphragmatic hernia": "hernia",
    "hiatus hernia": "hernia",
    "rib fracture": "fracture",
    "fractures": "fracture",
    "fx": "fracture",
    "tube": "support_devices",
    "line": "support_devices",
    "lines and tubes": "support_devices",
    "catheter": "support_devices",
    "central line": "support_devices",
    "central venous catheter": "support_devices",
    "picc": "support_devices",
    "picc line": "support_devices",
    "port": "support_devices",
    "pacemaker": "support_devices",
    "pacer": "support_devices",
    "aicd": "support_devices",
    "icd": "support_devices",
    "defibrillator": "support_devices",
    "et tube": "support_devices",
    "ett": "support_devices",
    "endotracheal tube": "support_devices",
    "ng tube": "support_devices",
    "nasogastric tube": "support_devices",
    "chest tube": "support_devices",
    "tracheostomy tube": "support_devices",
    "medical device": "support_devices",
    "device": "support_devices",
}

# torchxrayvision's 18 pathology names (xrv.datasets.default_pathologies) -> id.
XRV_LABELS: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Consolidation": "consolidation",
    "Infiltration": "infiltration",
    "Pneumothorax": "pneumothorax",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Effusion": "pleural_effusion",
    "Pneumonia": "pneumonia",
    "Pleural_Thickening": "pleural_thickening",
    "Cardiomegaly": "cardiomegaly",
    "Nodule": "nodule",
    "Mass": "mass",
    "Hernia": "hernia",
    "Lung Lesion": "lung_lesion",
    "Fracture": "fracture",
    "Lung Opacity": "lung_opacity",
    "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
}

# The 14 CheXpert / MIMIC-CXR (CheXpert labeler) labels -> id.
CHEXPERT_LABELS: dict[str, str] = {
    "No Finding": "no_finding",
    "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
    "Cardiomegaly": "cardiomegaly",
    "Lung Opacity": "lung_opacity",
    "Lung Lesion": "lung_lesion",
    "Edema": "edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural_effusion",
    "Pleural Other": "pleural_other",
    "Fracture": "fracture",
    "Support Devices": "support_devices",
}

# NIH ChestX-ray14: 14 findings + "No Finding" (spelled as in Data_Entry_2017) -> id.
NIH_LABELS: dict[str, str] = {
    "No Finding": "no_finding",
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural_effusion",
    "Infiltration": "infiltration",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Pleural_Thickening": "pleural_thickening",
    "Hernia": "hernia",
}

# CheXpert's label hierarchy (Irvin et al. 2019, fig. 2): a child finding implies its parent. The labeler
# reports what the text says (it does not propagate); consumers that compare against a source labelling only
# the parent (e.g. a classifier's "Lung Lesion") can use this.
PARENTS: dict[str, str] = {
    "cardiomegaly": "enlarged_cardiomediastinum",
    "lung_lesion": "lung_opacity",
    "nodule": "lung_lesion",
    "mass": "lung_lesion",
    "edema": "lung_opacity",
    "consolidation": "lung_opacity",
    "pneumonia": "consolidation",
    "atelectasis": "lung_opacity",
    "infiltration": "lung_opacity",
    "pleural_thickening": "pleural_other",
}


def ancestors(finding: str) -> list[str]:
    """The chain of parents of `finding` (nearest first), e.g. nodule -> [lung_lesion, lung_opacity]."""
    out: list[str] = []
    while finding in PARENTS and PARENTS[finding] not in out:
        finding = PARENTS[finding]
        out.append(finding)
    return out


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
