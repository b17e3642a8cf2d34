"""A real Orthanc PACS for tests: Debian's `orthanc` + `orthanc-dicomweb`, started on 127.0.0.1.

Each server gets a free port, a temporary storage dir and its own config (basic auth on, DICOM
network off, remote access off); the system service is never used. ``orthanc_or_skip`` skips with
the measured reason when the binary or the DICOMweb plugin is not installed (`make pacs` installs
them); a server that is installed but does not start is a test failure, not a skip.

Sample data (../shared/data/dicom): CR-MONO1-10-chest has no file meta (a file meta is added here),
the two SIIM files share one SOP Instance UID (only the real one is stored), and a study without
any radiograph is made from the fake-MONOCHROME1 copy with fresh UIDs and Modality OT.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

USER, PASSWORD = "cxr", "agent-test"
PLUGIN_PATHS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


def orthanc_or_skip() -> tuple[str, str]:
    """(Orthanc binary, DICOMweb plugin) or pytest.skip naming what is missing."""
    binary = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).exists()), None)
    plugin = next((p for p in PLUGIN_PATHS if Path(p).exists()), None)
    if binary is None or plugin is None:
        missing = " and ".join(n for n, v in (("orthanc", binary), ("orthanc-dicomweb", plugin)) if v is None)
        pytest.skip(f"Debian package(s) {missing} not installed (run `make pacs`, or apt-get install -y orthanc "
                    "orthanc-dicomweb): the real-PACS tests need them")
    return binary, plugin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> Orthanc:
        binary, plugin = orthanc_or_skip()
        storage = self.root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "cxr-agent-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(config))
        log = (self.root / "orthanc.log").open("wb")
        self.proc = subprocess.Popen([binary, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: "
                                   f"{(self.root / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.dicomweb}/studies", auth=(USER, PASSWORD), timeout=1).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("Orthanc did not answer within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def upload(self, ds: pydicom.Dataset) -> None:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        r = requests.post(f"{self.url}/instances", data=buf.getvalue(), auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()


def with_file_meta(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A legacy dataset (no preamble, no group 0002) made a valid Part 10 file: implicit VR LE, as read."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    return ds


@dataclass
class Samples:
    """The sample studies stored in the test PACS: study UIDs and the local datasets they came from."""

    chest: pydicom.Dataset  # small CR (440 x 440): the one the tests pull
    chest_uid: str
    siim_uid: str
    no_radiograph_uid: str


def store_samples(server: Orthanc, dicom_dir: Path) -> Samples:
    chest = with_file_meta(pydicom.dcmread(dicom_dir / "CR-MONO1-10-chest.dcm", force=True))
    server.upload(chest)
    siim = pydicom.dcmread(next(dicom_dir.glob("siim_1.2.*.dcm")))  # not its fake twin: same SOP Instance UID
    server.upload(siim)
    other = pydicom.dcmread(dicom_dir / "siim_Fake_MONOCHROME1.dcm")
    other.StudyInstanceUID, other.SeriesInstanceUID = generate_uid(), generate_uid()
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    other.Modality = "OT"
    server.upload(other)
    return Samples(chest=chest, chest_uid=chest.StudyInstanceUID, siim_uid=siim.StudyInstanceUID,
                   no_radiograph_uid=other.StudyInstanceUID)
