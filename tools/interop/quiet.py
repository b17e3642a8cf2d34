"""Keep header values out of logs while a DICOM header is parsed, copied or written; per thread.

pydicom and highdicom report odd values verbatim ("Invalid value for VR DA: '1995.07.20'", a
single-component patient name ...) through logging and warnings; on a patient's header those values
are PHI. Inside ``header_values_muted()`` this thread's pydicom/highdicom/dicomweb-client log records
and its ``warnings.warn`` calls are dropped; other threads are untouched.

Why not ``warnings.catch_warnings()``: before Python 3.14 it swaps the process-wide filter list, so
two threads inside it at once restore each other's filters (warnings muted for good, or one
thread's PHI let through while another's block is still open). Here ``warnings.warn`` is wrapped
once, at import, by a function that drops the call on a muted thread and otherwise passes it on
unchanged; nothing global changes while a block runs.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_STATE = threading.local()


def muted() -> bool:
    """True on a thread that is inside ``header_values_muted()``."""
    return getattr(_STATE, "depth", 0) > 0


class _MuteThisThread(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not muted()


_FILTER = _MuteThisThread()
for _name in ("pydicom", "highdicom", "dicomweb_client"):
    logging.getLogger(_name).addFilter(_FILTER)


def _install_warn_wrapper() -> None:
    if getattr(warnings.warn, "_cxr_muting", False):
        return  # a reload of this module must not wrap twice
    passed_on = warnings.warn

    def warn(message: Any, category: Any = None, stacklevel: int = 1, source: Any = None, **kw: Any) -> None:
        if muted():
            return
        passed_on(message, category, stacklevel + 1, source, **kw)  # +1: the caller's frame, not this one

    warn._cxr_muting = True  # type: ignore[attr-defined]
    warnings.warn = warn  # type: ignore[assignment]


_install_warn_wrapper()


@contextmanager
def header_values_muted() -> Iterator[None]:
    """Drop this thread's DICOM-library log records and warnings for the block (nestable)."""
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _STATE.depth -= 1
