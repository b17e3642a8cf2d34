"""The IU X-ray reports' MeSH major terms mapped onto the finding vocabulary.

Gold labels for the labeler benchmark and the reconciler simulation: both sit above the product and
read the same map from here.
"""

from __future__ import annotations

from collections.abc import Iterable

# MeSH head term -> finding (the head is the part before the first "/").
MESH_TO_FINDING: dict[str, str] = {
    "Cardiomegaly": "cardiomegaly",
    "Opacity": "lung_opacity",
    "Airspace Disease": "lung_opacity",
    "Density": "lung_opacity",
    "Nodule": "nodule",
    "Calcified Granuloma": "nodule",
    "Granuloma": "nodule",
    "Mass": "mass",
    "Cavitation": "lung_lesion",
    "Pulmonary Edema": "edema",
    "Pulmonary Congestion": "edema",
    "Heart Failure": "edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Infiltrate": "infiltration",
    "Pulmonary Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Hydropneumothorax": "pneumothorax",
    "Hemopneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural_effusion",
    "Emphysema": "emphysema",
    "Pulmonary Emphysema": "emphysema",
    "Bullous Emphysema": "emphysema",
    "Pulmonary Disease, Chronic Obstructive": "emphysema",
    "Pulmonary Fibrosis": "fibrosis",
    "Fibrosis": "fibrosis",
    "Cicatrix": "fibrosis",
    "Hernia, Hiatal": "hernia",
    "Hernia, Diaphragmatic": "hernia",
    "Fractures, Bone": "fracture",
    "Catheters, Indwelling": "support_devices",
    "Implanted Medical Device": "support_devices",
    "Medical Device": "support_devices",
    "Tube, Inserted": "support_devices",
    "Stents": "support_devices",
}


def mesh_findings(terms: Iterable[str]) -> set[str]:
    """MeSH major terms ("Pleural Effusion/bilateral/small") -> the set of vocabulary findings they name."""
    out: set[str] = set()
    for term in terms:
        parts = [p.strip() for p in term.split("/")]
        head, mods = parts[0], {p.lower() for p in parts[1:]}
        if head == "Emphysema" and "subcutaneous" in mods:
            continue
        if head == "Density" and "lung" not in mods:
            continue
        if head in MESH_TO_FINDING:
            out.add(MESH_TO_FINDING[head])
        elif head == "Cardiac Shadow" and "enlarged" in mods:
            out.add("cardiomegaly")
        elif head == "Mediastinum" and mods & {"prominent", "enlarged", "wide", "widened"} and "lymph nodes" not in mods:
            out.add("enlarged_cardiomediastinum")
        elif head == "Thickening" and "pleura" in mods:
            out.add("pleural_thickening")
    return out
