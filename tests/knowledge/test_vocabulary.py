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
    SYNONYMS,
    XRV_LABELS,
    ancestors,
    display_name,
    normalize,
)


def test_ids_and_display_names() -> None:
    assert len(FINDINGS) == 21 and len(FINDING_SET) == 21
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


@pytest.mark.parametrize("table", [XRV_LABELS, CHEXPERT_LABELS, NIH_LABELS], ids=["xrv", "chexpert", "nih"])
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
