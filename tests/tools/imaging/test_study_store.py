"""StudyStore: round trip by id, clear misses, atomic and concurrent writes."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from imaging_helpers import make_dicom, phantom

from cxr_agent.settings import Settings
from tools.ingestion.loader import load_study
from tools.ingestion.store import StudyNotFound, StudyStore
from tools.ingestion.study import Study


@pytest.fixture
def study() -> Study:
    return load_study(make_dicom(phantom(), ViewPosition="AP"))


def test_round_trip(tmp_path, study):
    store = StudyStore(tmp_path)
    sid = store.put(study)
    assert sid == study.id and sid in store and len(store) == 1 and list(store.ids()) == [sid]
    back = store.get(sid)
    assert np.array_equal(back.pixels, study.pixels) and back.pixels.dtype == np.float32
    assert back.original_size == study.original_size and back.view == "AP"
    assert back.source_format == "dicom" and back.metadata == study.metadata


def test_put_is_idempotent_and_leaves_no_temp_files(tmp_path, study):
    store = StudyStore(tmp_path)
    store.put(study)
    inode = next(tmp_path.rglob("*.npy")).stat().st_ino
    store.put(study)
    assert next(tmp_path.rglob("*.npy")).stat().st_ino == inode  # not rewritten (a rewrite renames a new file in)
    assert not list(tmp_path.rglob("*.tmp"))


def test_missing_and_invalid_ids(tmp_path):
    store = StudyStore(tmp_path)
    with pytest.raises(StudyNotFound, match="upload the image again") as info:
        store.get("0" * 64)
    assert isinstance(info.value, KeyError)
    for bad in ("../../etc/passwd", "abc", "", "G" * 64):
        assert bad not in store
        with pytest.raises(StudyNotFound):
            store.get(bad)
    assert 123 not in store


def test_damaged_file_is_reported(tmp_path, study):
    store = StudyStore(tmp_path)
    sid = store.put(study)
    npy = next(tmp_path.rglob("*.npy"))
    arr = np.load(npy)
    arr[0, 0] = 1.0 - arr[0, 0]
    np.save(npy, arr)
    with pytest.raises(StudyNotFound, match="damaged"):
        store.get(sid)


def test_delete(tmp_path, study):
    store = StudyStore(tmp_path)
    sid = store.put(study)
    assert store.delete(sid) and sid not in store and not store.delete(sid)


def test_from_settings_uses_studies_dir(tmp_path, study):
    settings = Settings(data_dir=tmp_path / "data")
    store = StudyStore.from_settings(settings)
    assert store.root == settings.studies_dir
    store.put(study)
    assert study.id in StudyStore(tmp_path / "data" / "studies")


def test_concurrent_puts_and_gets(tmp_path):
    store = StudyStore(tmp_path)
    studies = [Study.from_array(phantom() * (0.5 + i / 20)) for i in range(4)]
    errors: list[BaseException] = []

    def work(s: Study) -> None:
        try:
            for _ in range(3):
                store.put(s)
                assert np.array_equal(store.get(s.id).pixels, s.pixels)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in studies for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store) == 4 and not list(tmp_path.rglob("*.tmp"))


def test_study_pixels_are_read_only_so_the_id_keeps_meaning_its_hash():
    import numpy as np
    import pytest

    from tools.ingestion.study import Study, pixel_hash

    study = Study.from_array(np.linspace(0, 1, 128 * 96, dtype=np.float32).reshape(96, 128))
    assert not study.pixels.flags.writeable
    with pytest.raises(ValueError):
        study.pixels[0, 0] = 0.5
    assert study.id == pixel_hash(study.pixels)


def _truncate_pixels(npy, meta):
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])


def _flip_a_byte(npy, meta):
    data = bytearray(npy.read_bytes())
    data[-7] ^= 0x01  # a pixel byte: the array still loads, its hash no longer matches the id
    npy.write_bytes(bytes(data))


def _truncate_metadata(npy, meta):
    meta.write_bytes(meta.read_bytes()[:10])


@pytest.mark.parametrize("damage", [_truncate_pixels, _flip_a_byte, _truncate_metadata])
def test_uploading_again_repairs_a_damaged_study(tmp_path, study, damage):
    store = StudyStore(tmp_path)
    sid = store.put(study)
    npy, meta = next(tmp_path.rglob("*.npy")), next(tmp_path.rglob("*.json"))
    damage(npy, meta)
    with pytest.raises(StudyNotFound, match="damaged"):
        store.get(sid)
    assert store.put(study) == sid
    back = store.get(sid)
    assert np.array_equal(back.pixels, study.pixels) and back.metadata == study.metadata


def test_a_re_upload_is_recorded_and_a_read_is_not(tmp_path, study):
    store = StudyStore(tmp_path)
    sid = store.put(study)
    for f in tmp_path.rglob(f"{sid}*"):
        os.utime(f, (1_000_000, 1_000_000))
    store.get(sid)
    assert store.uploaded_at(sid) == 1_000_000
    store.put(study)
    assert store.uploaded_at(sid) > 1_000_000 and store.uploaded_at("f" * 64) == 0.0


def test_refusals_name_no_directory(tmp_path):
    store = StudyStore(tmp_path / "secret-dir")
    with pytest.raises(StudyNotFound) as info:
        store.get("0" * 64)
    assert "secret-dir" not in str(info.value) and str(tmp_path) not in str(info.value)
