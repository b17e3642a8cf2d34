"""Bounded ingestion and storage: pixel cap from the header, uint16 store hashed as stored, v0.1
studies still load, owner-only files, a disk quota with least-recently-used eviction, bounded decodes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from imaging_helpers import grey8, make_dicom, phantom, png_bytes

from cxr_agent.settings import Settings
from tools.ingestion.loader import ImageTooLarge, IngestBusy, load_study
from tools.ingestion.store import StudyStore
from tools.ingestion.study import Study, pixel_hash, quantise

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "migration_v0_1"


def _forbid_decoding(monkeypatch):
    from PIL import ImageFile

    import tools.ingestion.dicom_io

    def boom(*a, **k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    monkeypatch.setattr(tools.ingestion.dicom_io, "_decode_pixels", boom)


def _black_png(width: int, height: int) -> bytes:
    """A real, fully valid 8-bit grey PNG of black pixels, streamed so it never sits in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---- limits from the header ---------------------------------------------------------------------
def test_100_megapixel_png_of_100_kib_is_refused_without_decoding(monkeypatch):
    data = _black_png(10_000, 10_000)
    assert len(data) < 200 * 1024  # a ~100 KiB file declaring 100 MP
    _forbid_decoding(monkeypatch)
    with pytest.raises(ImageTooLarge, match="10000 x 10000") as info:
        load_study(data, settings=Settings())
    assert "40 megapixels" in str(info.value) and "CXR_AGENT_MAX_IMAGE_PIXELS" in str(info.value)


def test_pixel_cap_is_a_setting_for_every_format(monkeypatch):
    small = Settings(max_image_pixels=10_000)  # the 160 x 192 phantom is 30,720 pixels
    png, dcm = png_bytes(grey8(phantom())), make_dicom(phantom())
    assert load_study(png, settings=Settings()).width == 160
    _forbid_decoding(monkeypatch)
    for data in (png, dcm):
        with pytest.raises(ImageTooLarge, match="0.01 megapixels"):
            load_study(data, settings=small)


def test_decodes_are_bounded_and_a_full_house_is_refused_clearly(monkeypatch):
    import tools.ingestion.loader

    settings = Settings(decode_concurrency=1)
    slots = tools.ingestion.loader._decode_slots(1)
    monkeypatch.setattr(tools.ingestion.loader, "DECODE_WAIT_S", 0.05)
    assert slots.acquire(timeout=1)  # another upload is being decoded
    try:
        with pytest.raises(IngestBusy, match="busy"):
            load_study(png_bytes(grey8(phantom())), settings=settings)
    finally:
        slots.release()
    assert load_study(png_bytes(grey8(phantom())), settings=settings).width == 160  # the slot came back


# ---- compact storage, id = hash of what is stored ---------------------------------------------
def test_pixels_are_quantised_to_uint16_and_stored_as_such(tmp_path):
    study = load_study(make_dicom(phantom(), bits=14))
    assert study.pixels.dtype == np.float32
    q = quantise(study.pixels)
    levels = study.pixels.astype(np.float64) * 65535
    assert float(np.abs(levels - np.rint(levels)).max()) < 1e-2  # on the uint16 grid
    source_levels = len(np.unique(np.round(phantom() * (2**14 - 1))))
    assert len(np.unique(q)) == source_levels  # every 14-bit grey level of the source kept apart
    store = StudyStore(tmp_path)
    store.put(study)
    npy = next(tmp_path.rglob("*.npy"))
    stored = np.load(npy)
    assert stored.dtype == np.uint16 and np.array_equal(stored, q)
    assert npy.stat().st_size <= 2 * study.width * study.height + 256  # 2 bytes a pixel (+ header)
    assert pixel_hash(stored) == study.id == store.get(study.id).id
    assert json.loads(npy.with_suffix(".json").read_text())["schema"] == 2


def test_v0_1_float32_studies_still_load_and_copy_with_their_id(tmp_path):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    shutil.copytree(FIXTURE / "data", tmp_path / "old")
    old = StudyStore(tmp_path / "old" / "studies")
    study = old.get(expected["study_id"])
    assert study.id == expected["study_id"] and study.pixels.dtype == np.float32
    assert list(study.pixels.shape) == expected["pixels_shape"]
    new = StudyStore(tmp_path / "new")
    assert new.put(study) == expected["study_id"]
    assert new.get(expected["study_id"]).pixels.dtype == np.float32  # kept as float32 so the old id holds


def test_store_refuses_a_study_whose_id_is_not_its_hash(tmp_path):
    fake = Study(id="a" * 64, pixels=np.zeros((80, 80), np.float32), original_size=(80, 80))
    with pytest.raises(ValueError, match="not the hash"):
        StudyStore(tmp_path).put(fake)


# ---- owner-only -------------------------------------------------------------------------------
def test_data_dir_and_study_files_are_owner_only(tmp_path):
    old = os.umask(0o022)  # a typical umask would give 0755 / 0644
    try:
        settings = Settings(data_dir=tmp_path / "data", storage_quota_mb=0)
        store = StudyStore.from_settings(settings)
        store.put(load_study(make_dicom(phantom())))
    finally:
        os.umask(old)
    for path in [settings.data_dir, *settings.data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path.relative_to(tmp_path), oct(mode))


# ---- quota and eviction -----------------------------------------------------------------------
def _studies(n: int) -> list[Study]:
    return [Study.from_array(phantom(120, 100) * (0.5 + i / 10)) for i in range(n)]


def test_quota_evicts_the_least_recently_used_study_with_its_artifacts(tmp_path):
    a, b, c = _studies(3)
    one = 2 * 120 * 100 + 1024  # a study's pixels + metadata, roughly
    store = StudyStore(tmp_path / "studies", artifacts_dir=tmp_path / "artifacts", quota_bytes=int(2.6 * one))
    store.put(a)
    art = tmp_path / "artifacts" / a.id
    art.mkdir(parents=True)
    (art / "classifier-x-effusion.npy").write_bytes(b"\0" * 100)
    os.utime(art / "classifier-x-effusion.npy", (1, 1))  # old: the study's use time is what counts
    store.put(b)
    store.get(a.id)  # a is used again: b is now the least recently used
    store.put(c)
    assert a.id in store and c.id in store and b.id not in store
    assert art.exists()
    d = _studies(4)[3]
    store.put(d)  # over quota again: a (read before c was written) goes, with its heatmap folder
    assert a.id not in store and not art.exists() and {c.id, d.id} <= set(store.ids())


def test_no_quota_keeps_everything(tmp_path):
    store = StudyStore(tmp_path, quota_bytes=0)
    for s in _studies(4):
        store.put(s)
    assert len(store) == 4


def test_the_study_just_written_is_never_evicted(tmp_path):
    store = StudyStore(tmp_path, quota_bytes=10)  # smaller than any study
    a, b = _studies(2)
    store.put(a)
    store.put(b)
    assert list(store.ids()) == [b.id]
