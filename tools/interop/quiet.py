"""Keep header values out of logs while a PACS header is parsed, copied or written.

pydicom and highdicom report odd values verbatim ("Invalid value for VR DA: '1995.07.20'", a
single-component patient name ...) through logging and warnings; on a PACS header those values
are PHI. Inside ``header_values_muted()`` this thread's pydicom/highdicom log records are dropped
and warnings are ignored (tools/ingestion/dicom_io.py does the same while decoding an upload).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class _MuteThisThread(logging.Filter):
    state = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.state, "depth", 0)


_FILTER = _MuteThisThread()
for _name in ("pydicom", "highdicom", "dicomweb_client"):
    logging.getLogger(_name).addFilter(_FILTER)


@contextmanager
def header_values_muted() -> Iterator[None]:
    """Drop this thread's pydicom/highdicom/dicomweb-client log records and all warnings for the block."""
    state = _FILTER.state
    state.depth = getattr(state, "depth", 0) + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        state.depth -= 1
