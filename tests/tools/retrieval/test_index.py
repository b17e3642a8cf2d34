"""ReportIndex with the real bundled MiniLM on real IU reports: build, persist, load, search, add, validate."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from kb_index_helpers import (
    SMALL_N,
    built_index_dir,
    copy_index,
    kb_settings,
    small_reports,
    tiny_embedder_dir,
)

from knowledge.labeler import LABELER_VERSION, present_findings
from tools.retrieval.corpus import Report, corpus_fingerprint
from tools.retrieval.embedder import BUNDLED_EMBEDDER, canonical_embedder_name, get_embedder
from tools.retrieval.index import (
    IndexCorrupt,
    IndexMismatch,
    IndexMissing,
    ReportIndex,
    _safe_metadata,
    choose_index_params,
    snippet,
)


@pytest.fixture(scope="module")
def index() -> ReportIndex:
    idx = ReportIndex.load(built_index_dir(), kb_settings(built_index_dir()))
    yield idx
    idx.close()


def test_build_writes_manifest_and_files(index: ReportIndex) -> None:
    path = built_index_dir()
    for name in ("manifest.json", "index.faiss", "vectors.f32", "reports.sqlite"):
        assert (path / name).is_file(), name
    m = json.loads((path / "manifest.json").read_text())
    assert m["embedder"] == BUNDLED_EMBEDDER and m["dimension"] == 384
    assert m["corpus"]["spec"] == "iu-xray"
    assert m["corpus"]["fingerprint"] == corpus_fingerprint(small_reports()[:SMALL_N])
    assert m["labeler_version"] == LABELER_VERSION
    assert m["index"]["type"] == "flat" and m["count"] == SMALL_N == len(index)
    assert m["created_at"] and sum(m["label_counts"].values()) >= SMALL_N
    assert (path / "vectors.f32").stat().st_size == SMALL_N * 384 * 4
    # No half-built temporaries left beside the index.
    assert [p.name for p in path.parent.iterdir()] == ["index"]


def test_search_finds_effusions(index: ReportIndex) -> None:
    [hits] = index.search("small left pleural effusion", k=5)
    assert len(hits) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert "pleural_effusion" in hits[0].labels
    assert sum("pleural_effusion" in h.labels for h in hits) >= 3
    assert len({h.id for h in hits}) == 5 and all(h.snippet for h in hits)
    normal = index.search("The heart is normal in size. The lungs are clear. No pneumothorax or effusion.", k=5)[0]
    assert sum("no_finding" in h.labels for h in normal) >= 4


def test_labels_are_the_labelers_present_findings(index: ReportIndex) -> None:
    by_id = {r.id: r for r in small_reports()}
    hits = index.search(["cardiomegaly with pulmonary edema", "calcified granuloma right upper lobe"], k=4)
    assert len(hits) == 2
    for h in hits[0] + hits[1]:
        assert list(h.labels) == present_findings(by_id[h.id].text)
        assert not set(h.uncertain) & set(h.labels)


def test_query_of_an_indexed_report_returns_it_first(index: ReportIndex) -> None:
    report = small_reports()[7]
    [hits] = index.search(report.text, k=3)
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    same = [h for h in hits if abs(h.score - hits[0].score) < 1e-4]
    assert report.id in {h.id for h in same}


def test_k_larger_than_corpus_is_clamped(index: ReportIndex) -> None:
    [hits] = index.search("pneumothorax", k=10_000)
    assert len(hits) == SMALL_N


def test_embedder_name_mismatch_is_refused_naming_both(tmp_path) -> None:
    other = "sentence-transformers/paraphrase-MiniLM-L3-v2"
    with pytest.raises(IndexMismatch) as err:
        ReportIndex.load(built_index_dir(), kb_settings(built_index_dir(), embedder=other))
    msg = str(err.value)
    assert BUNDLED_EMBEDDER in msg and other in msg and "kb build" in msg


def test_dimension_mismatch_is_refused(tmp_path) -> None:
    path = copy_index(tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    m["dimension"] = 128
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexMismatch, match=r"384-d.*dimension 128"):
        ReportIndex.load(path, kb_settings(path))


def test_embedder_with_other_dimension_is_refused() -> None:
    """A real (random-weight) 32-d sentence-transformer loaded by path cannot search a 384-d index."""
    tiny = get_embedder(str(tiny_embedder_dir()), device="cpu")
    assert tiny.dimension == 32 and tiny.encode(["effusion"]).shape == (1, 32)
    with pytest.raises(IndexMismatch) as err:
        ReportIndex.load(built_index_dir(), kb_settings(built_index_dir()), embedder=tiny)
    assert BUNDLED_EMBEDDER in str(err.value) and canonical_embedder_name(tiny.name) in str(err.value)


def test_missing_and_inconsistent_indexes_are_clear_errors(tmp_path) -> None:
    with pytest.raises(IndexMissing, match="kb build"):
        ReportIndex.load(tmp_path / "nowhere", kb_settings(tmp_path / "nowhere"))
    path = copy_index(tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    m["count"] = SMALL_N + 1
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexCorrupt, match="inconsistent"):
        ReportIndex.load(path, kb_settings(path))


def test_incremental_add(tmp_path) -> None:
    path = copy_index(tmp_path)
    idx = ReportIndex.load(path, kb_settings(path))
    new = small_reports()[SMALL_N : SMALL_N + 12]
    assert idx.add(new, corpus_spec="iu-extra") == 12
    assert idx.add(new) == 0  # ids already indexed are skipped
    target = new[5]
    [hits] = idx.search(target.text, k=3)
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    idx.close()
    again = ReportIndex.load(path, kb_settings(path))
    assert len(again) == SMALL_N + 12
    assert again.manifest["additions"][0]["count"] == 12 and again.manifest["additions"][0]["spec"] == "iu-extra"
    assert len(again.manifest["additions"]) == 1  # the no-op re-add changed nothing
    assert (path / "vectors.f32").stat().st_size == (SMALL_N + 12) * 384 * 4
    assert target.id in {h.id for h in again.search(target.text, k=3)[0] if h.score > 0.999}
    again.close()


def test_add_past_exact_max_switches_to_ivf(tmp_path) -> None:
    path = copy_index(tmp_path)
    settings = kb_settings(path, exact_index_max=SMALL_N + 5)
    idx = ReportIndex.load(path, settings)
    idx.add(small_reports()[SMALL_N : SMALL_N + 10])
    assert idx.index_type == "ivf"
    loaded = faiss.read_index(str(path / "index.faiss"))
    assert isinstance(faiss.downcast_index(loaded), faiss.IndexIVF) and loaded.ntotal == SMALL_N + 10
    [hits] = idx.search("small left pleural effusion", k=5)
    assert "pleural_effusion" in hits[0].labels
    idx.close()


def test_build_chooses_ivf_above_exact_max(tmp_path) -> None:
    reports = small_reports()[:60]
    idx = ReportIndex.build(reports, kb_settings(tmp_path / "ivf", exact_index_max=20), corpus_spec="iu-xray")
    m = idx.manifest["index"]
    assert m["type"] == "ivf" and m["factory"].startswith("IVF") and m["nprobe"] >= 1
    ivf = faiss.extract_index_ivf(idx._cpu_index)
    assert ivf.nprobe == m["nprobe"] and ivf.ntotal == 60
    # With every list probed, IVF-Flat returns exactly what exact search returns.
    ivf.nprobe = ivf.nlist
    q = idx.embedder.encode(["pleural effusion", "normal chest"])
    exact = faiss.IndexFlatIP(384)
    exact.add(np.fromfile(tmp_path / "ivf" / "vectors.f32", dtype=np.float32).reshape(-1, 384))
    assert [[h.row for h in hs] for hs in idx.search_vectors(q, 5)] == exact.search(q, 5)[1].tolist()
    idx.close()


def test_choose_index_params() -> None:
    assert choose_index_params(3_927, 200_000).kind == "flat"
    big = choose_index_params(1_000_000, 200_000)
    assert big.kind == "ivf" and big.factory.startswith("IVF") and big.nprobe and big.train_size
    nlist = int(big.factory[3:].split(",")[0].split("_")[0])
    assert 1024 <= nlist <= 16384 and big.train_size >= 32 * nlist
    small = choose_index_params(50, 10)
    assert int(small.factory[3:].split(",")[0].split("_")[0]) <= 50


def test_failed_build_keeps_previous_index(tmp_path) -> None:
    path = copy_index(tmp_path)

    def broken():
        yield from small_reports()[:3]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        ReportIndex.build(broken(), kb_settings(path))
    idx = ReportIndex.load(path, kb_settings(path))
    assert len(idx) == SMALL_N
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    idx.close()
    with pytest.raises(ValueError, match="no report"):
        ReportIndex.build([Report("x", "   ")], kb_settings(tmp_path / "empty"))


def test_labeler_version_change_relabels_small_index(tmp_path) -> None:
    path = copy_index(tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    m["labeler_version"] = "0.0-old"
    (path / "manifest.json").write_text(json.dumps(m))
    stale = ReportIndex.load(path, kb_settings(path), relabel=False)
    assert stale.labels_stale
    stale.close()
    idx = ReportIndex.load(path, kb_settings(path))
    assert not idx.labels_stale and idx.manifest["labeler_version"] == LABELER_VERSION
    assert json.loads((path / "manifest.json").read_text())["labeler_version"] == LABELER_VERSION
    idx.close()


def test_metadata_never_keeps_identifiers() -> None:
    meta = {"patient_name": "Doe^John", "PatientBirthDate": "19500101", "accession_number": "A1", "MRN": "7",
            "findings": "dup", "view": "PA", "source": "x.csv"}
    assert _safe_metadata(meta) == {"view": "PA", "source": "x.csv"}


def test_snippet_cuts_on_words() -> None:
    text = "word " * 200
    s = snippet(text, 50)
    assert len(s) <= 52 and s.endswith("…") and "  " not in s
    assert snippet("  short\n text ") == "short text"
