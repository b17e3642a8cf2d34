"""torchxrayvision classifier weight files: names, where they live, whether they are intact, fetching them.

Kept apart from the loader (tools/classifier/loading.py) so `cxr-agent models` can list, check and
download weights without building a network.

Offline safety: xrv downloads on a missing file (printing a hint and raising a `requests` error), so
every load checks the file first and fails with a message naming the file, the directory and
`cxr-agent models download`.

Integrity: before any load the file's sha256 is compared with the catalogue's pin
(XRV_SHA256 below) or, since torchxrayvision publishes no hashes, with the hash recorded in the
owner-only data dir at its first verified download (trust on first use; tools/integrity.py). A
download always starts from zero: a stale partial file is discarded, never resumed.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.base import WeightStatus
from tools.integrity import (
    WeightsIntegrityError,
    record_hash,
    recorded_hash,
    sha256_file,
    sidecar,
    verify_file,
)

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

DOWNLOAD_COMMAND = "cxr-agent models download"

# Names users may also type; xrv's own table has no "-kaggle" key (its RSNA model is the Kaggle file).
ALIASES: dict[str, str] = {"densenet121-res224-kaggle": "densenet121-res224-rsna"}

# The model names offered (xrv also keeps short keys like "all", "nih": accepted too).
MODEL_NAMES: tuple[str, ...] = (
    "densenet121-res224-all",
    "resnet50-res512-all",
    "densenet121-res224-nih",
    "densenet121-res224-chex",
    "densenet121-res224-pc",
    "densenet121-res224-mimic_nb",
    "densenet121-res224-mimic_ch",
    "densenet121-res224-rsna",
)


class ClassifierWeightsMissing(RuntimeError):
    """The real weight file is not on disk (and we never download implicitly), or it cannot be loaded."""


class ClassifierDownloadError(RuntimeError):
    """A weight download failed or is not allowed (offline)."""

# sha256 per torchxrayvision release file (https://github.com/mlmed/torchxrayvision/releases/tag/v1).
# torchxrayvision publishes no checksums: its models.py (1.5.7, in .venv) carries only the URLs, and
# its README and release notes list none. So no hash is invented here: each is None, and the hash
# is recorded in the data dir when `cxr-agent models download` first fetches it
# (trust on first use) and checked before every later load. Write a hash here to pin a file for
# every installation (a pin wins over the recorded hash).
XRV_SHA256: dict[str, str | None] = {
    "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "nih-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "pc-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "mimic_nb-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "mimic_ch-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt": None,
    "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt": None,
}



def _xrv() -> Any:
    import torchxrayvision as xrv

    return xrv


def canonical_name(name: str) -> str:
    """Resolve aliases and validate against torchxrayvision's model table."""
    name = ALIASES.get(name.strip(), name.strip())
    table = _xrv().models.model_urls
    if name not in table:
        valid = ", ".join(MODEL_NAMES)
        raise ValueError(f"unknown classifier model {name!r}; choose one of: {valid}")
    return name


def model_spec(name: str) -> dict[str, Any]:
    """xrv's table entry: weights_url, labels ('' = not trained), op_threshs, input_resolution."""
    return _xrv().models.model_urls[canonical_name(name)]


def is_resnet(name: str) -> bool:
    return canonical_name(name).startswith("resnet")


def weights_dir(settings: Settings) -> Path:
    if settings.classifier_weights_dir is not None:
        return Path(settings.classifier_weights_dir)
    return Path(_xrv().utils.get_cache_dir())


def weights_path(settings: Settings, name: str | None = None) -> Path:
    """Where xrv expects the file: <dir>/<last part of the release URL>."""
    spec = model_spec(name or settings.classifier_model)
    return weights_dir(settings) / os.path.basename(spec["weights_url"])


def pinned_sha256(path: Path) -> str | None:
    return XRV_SHA256.get(Path(path).name)


def integrity_fix(path: Path) -> str:
    return (
        f"delete {path} (and its record {sidecar(path)}) and run `{DOWNLOAD_COMMAND}` to fetch it again "
        f"from the torchxrayvision release; if you copied this file from a source you trust, record its hash "
        f"with `{DOWNLOAD_COMMAND} --trust-existing`"
    )


def verify_weights(path: Path) -> str:
    """sha256 of ``path`` checked against the pin or the recorded hash; WeightsIntegrityError otherwise."""
    return verify_file(path, pinned_sha256(path), fix=integrity_fix(path))


# --------------------------------------------------------------------------------------------
# Status and download
# --------------------------------------------------------------------------------------------
def missing_message(settings: Settings, name: str | None = None) -> str:
    name = canonical_name(name or settings.classifier_model)
    path = weights_path(settings, name)
    return (
        f"Classifier weights for {name} are not on this machine: expected file {path.name} "
        f"in directory {path.parent}. Run `{DOWNLOAD_COMMAND}` (needs internet), or copy the file "
        f"there, or set CXR_AGENT_CLASSIFIER_WEIGHTS_DIR to the directory that holds it. "
        f"For a demo without weights use CXR_AGENT_MODEL_PROFILE=tiny (random weights, no diagnostic value)."
    )


def classifier_weight_status(settings: Settings) -> WeightStatus:
    """Whether the configured classifier's REAL weight file is present (regardless of profile).

    Cheap (no hashing): "present" means on disk with a hash to check it against; the hash itself is
    checked at load and by `cxr-agent models download`.
    """
    label = f"classifier: {settings.classifier_model}"
    try:
        path = weights_path(settings)
    except ValueError as exc:
        return WeightStatus(label, "classifier", False, "", "set CXR_AGENT_CLASSIFIER_MODEL", str(exc))
    present = path.is_file() and path.stat().st_size > 0
    detail = f"{path.stat().st_size / 1e6:.1f} MB" if present else "file missing"
    fix = None if present else DOWNLOAD_COMMAND
    if present and not (pinned_sha256(path) or recorded_hash(path)):
        present, fix = False, f"{DOWNLOAD_COMMAND} --trust-existing"
        detail += "; no sha256 pinned or recorded in the data dir, so it will not be loaded"
    if settings.model_profile == "tiny":
        detail += "; tiny profile active (random weights used)"
    return WeightStatus(name=label, kind="classifier", present=present, location=str(path), fix=fix, detail=detail)


ProgressFn = Callable[[int, "int | None"], None]  # (bytes done, total bytes or None)


def download_classifier_weights(
    settings: Settings, progress: ProgressFn | None = None, *, name: str | None = None, trust_existing: bool = False
) -> Path:
    """Fetch the configured classifier's weights with xrv's own downloader (resumable .part file),
    then check (pinned) or record (trust on first use) its sha256.

    A file already there is verified; one with no hash to check is refused unless ``trust_existing``
    (the user vouches for where it came from), which records its hash. progress(done, total) is
    called from a watcher thread while xrv downloads; total comes from the server's content-length.
    """
    name = canonical_name(name or settings.classifier_model)
    path = weights_path(settings, name)
    if path.is_file() and path.stat().st_size > 0:
        if trust_existing and not pinned_sha256(path) and not recorded_hash(path):
            record_hash(path)
        verify_weights(path)
        if progress:
            size = path.stat().st_size
            progress(size, size)
        return path
    url = model_spec(name)["weights_url"]
    if settings.offline:
        raise ClassifierDownloadError(
            f"offline mode (CXR_AGENT_OFFLINE=1) forbids downloading {url}. Unset it, or fetch the file "
            f"elsewhere and copy it to {path}."
        )
    import requests

    path.parent.mkdir(parents=True, exist_ok=True)
    total: int | None = None
    try:
        head = requests.head(url, allow_redirects=True, timeout=(10, 30))
        total = int(head.headers.get("content-length") or 0) or None
    except requests.RequestException:
        total = None  # the download itself reports the real error
    part = Path(str(path) + ".part")
    # xrv resumes an existing .part; bytes left by an earlier, interrupted transfer (another server,
    # another release, a hostile writer) would be joined to these and recorded as trusted: start over.
    part.unlink(missing_ok=True)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            if progress and part.exists():
                progress(part.stat().st_size, total)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # xrv draws its own text bar
            _xrv().utils.download(url, str(path))
    except requests.RequestException as exc:
        raise ClassifierDownloadError(
            f"could not download {url} ({type(exc).__name__}). Check the internet connection, or fetch "
            f"the file elsewhere and copy it to {path}."
        ) from exc
    finally:
        stop.set()
        watcher.join(timeout=1)
    _check_downloaded(path)
    if progress:
        size = path.stat().st_size
        progress(size, size)
    return path


def _check_downloaded(path: Path) -> None:
    """A pinned file must match (else it is removed); an unpinned one has its hash recorded (TOFU)."""
    pin = pinned_sha256(path)
    if pin is None:
        record_hash(path)
        return
    actual = sha256_file(path)
    if actual != pin:
        path.unlink(missing_ok=True)
        raise WeightsIntegrityError(
            f"downloaded {path.name} failed its integrity check: expected sha256 {pin} (pinned in "
            f"tools/catalogue.py), actual {actual}; the file was deleted. Try again; if it persists the "
            f"release file changed: check it and update the pin."
        )
