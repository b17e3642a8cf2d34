"""The finding vocabulary: ids, display names, normalize(), and the xrv / CheXpert / NIH label maps."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.vocabulary import (
    CHEXPERT_LABELS,
    DISPLAY_NAMES,
    FINDING_SET,
    FINDINGS,
    NIH_LABELS,
    PARENTS,
    REGIONS,
    SYNONYMS,
    VINDR_LABELS,
    XRV_LABELS,
    ancestors,
    display_name,
    normalize,
    normalize_region,
)


def test_ids_and_display_names() -> None:
    # CheXpert/NIH/xrv's 21 ids, then the VinDr-CXR labels no earlier id fits (appended: earlier order kept)
    assert len(FINDINGS) == 25 and len(FINDING_SET) == 25
    assert FINDINGS[-4:] == ("aortic_enlargement", "calcification", "interstitial_lung_disease", "other_lesion")
    assert set(DISPLAY_NAMES) == FINDING_SET
    assert display_name("pleural_effusion") == "Pleural effusion"
    assert display_name("unknown_thing") == "Unknown thing"
    assert set(SYNONYMS.values()) <= FINDING_SET


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Effusion", "pleural_effusion"),
        ("pleural effusions", "pleural_effusion"),
        ("PLEURAL_EFFUSION", "pleural_effusion"),
        ("Pleural-Effusion", "pleural_effusion"),
        ("  effusions ", "pleural_effusion"),
        ("PTX", "pneumothorax"),
        ("pneumothoraces", "pneumothorax"),
        ("Pleural_Thickening", "pleural_thickening"),
        ("infiltrates", "infiltration"),
        ("Infiltration", "infiltration"),
        ("opacities", "lung_opacity"),
        ("Lung Opacity", "lung_opacity"),
        ("nodules", "nodule"),
        ("masses", "mass"),
        ("rib fractures", "fracture"),
        ("hiatal hernia", "hernia"),
        ("CHF", "edema"),
        ("pulmonary vascular congestion", "edema"),
        ("COPD", "emphysema"),
        ("scarring", "fibrosis"),
        ("calcified granuloma", "nodule"),
        ("ET tube", "support_devices"),
        ("pacemaker", "support_devices"),
        ("Support Devices", "support_devices"),
        ("catheters", "support_devices"),
        ("enlarged heart", "cardiomegaly"),
        ("No Finding", "no_finding"),
        ("support_devices", "support_devices"),
        ("Enlarged Cardiomediastinum", "enlarged_cardiomediastinum"),
    ],
)
def test_normalize(name: str, expected: str) -> None:
    assert normalize(name) == expected


@pytest.mark.parametrize("bad", ["", "   ", "banana", "aorta", None, 3])
def test_normalize_unknown(bad) -> None:
    assert normalize(bad) is None


@pytest.mark.parametrize("table", [XRV_LABELS, CHEXPERT_LABELS, NIH_LABELS, VINDR_LABELS],
                         ids=["xrv", "chexpert", "nih", "vindr"])
def test_label_maps_agree_with_normalize(table: dict[str, str]) -> None:
    for label, fid in table.items():
        assert fid in FINDING_SET
        assert normalize(label) == fid, label


def _xrv_default_pathologies() -> list[str]:
    """xrv.datasets.default_pathologies, read from the installed source (importing xrv costs ~5 s of torch)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    assert spec is not None and spec.submodule_search_locations
    src = Path(next(iter(spec.submodule_search_locations)), "datasets.py").read_text(encoding="utf-8")
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "default_pathologies" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("default_pathologies not found in torchxrayvision/datasets.py")


def test_label_map_sizes_and_sources() -> None:
    assert list(XRV_LABELS) == _xrv_default_pathologies()
    assert len(CHEXPERT_LABELS) == 14 and len(NIH_LABELS) == 15
    assert NIH_LABELS["Effusion"] == "pleural_effusion" and NIH_LABELS["Pleural_Thickening"] == "pleural_thickening"
    assert len(set(XRV_LABELS.values())) == 18


def test_hierarchy() -> None:
    assert set(PARENTS) | set(PARENTS.values()) <= FINDING_SET
    assert ancestors("nodule") == ["lung_lesion", "lung_opacity"]
    assert ancestors("pneumonia") == ["consolidation", "lung_opacity"]
    assert ancestors("pneumothorax") == []


def test_vindr_labels_map_into_the_vocabulary() -> None:
    """RadVLM's detection/grounding label set (VinDr-CXR local labels, ../shared/RADVLM.md)."""
    assert list(VINDR_LABELS) == ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly",
                                  "Consolidation", "ILD", "Infiltration", "Lung Opacity", "Nodule/Mass",
                                  "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
                                  "Pulmonary fibrosis"]
    assert VINDR_LABELS["Nodule/Mass"] == "lung_lesion"  # the CheXpert parent of both: a box never says which
    assert {"nodule", "mass"} <= {f for f, p in PARENTS.items() if p == "lung_lesion"}
    assert VINDR_LABELS["Pulmonary fibrosis"] == "fibrosis" and VINDR_LABELS["ILD"] == "interstitial_lung_disease"
    assert normalize("nodule/mass") == normalize("Nodule / Mass") == "lung_lesion"
    assert normalize("tortuous aorta") == "aortic_enlargement" and ancestors("aortic_enlargement") == [
        "enlarged_cardiomediastinum"]
    # the earlier meanings stay: a calcified granuloma is a nodule, pleural calcification is pleural_other
    assert normalize("calcified granuloma") == "nodule" and normalize("pleural calcification") == "pleural_other"
    assert normalize("calcifications") == "calcification"


def test_regions_are_locations_not_findings() -> None:
    assert len(REGIONS) == 29 and not set(REGIONS) & FINDING_SET
    assert REGIONS["right_hemidiaphragm"] == "right hemidiaphragm" and REGIONS["svc"] == "svc"
    for rid, name in REGIONS.items():
        assert normalize_region(name) == rid
        assert normalize(name) is None, name  # a region's name never normalizes to a finding
    assert normalize_region("Right Hemi-Diaphragm") == "right_hemidiaphragm"
    assert normalize_region("superior vena cava") == "svc" and normalize_region("heart") == "cardiac_silhouette"
    assert normalize_region("pleural effusion") is None and normalize_region("") is None
