"""PACS transport: plain http only on loopback (or by explicit opt-in), an unverified TLS setting is
said once, and muting header values is per thread."""

from __future__ import annotations

import logging
import threading
import warnings

import pytest

from tools.interop import dicomweb
from tools.interop.dicomweb import PacsClient, PacsNotConfigured
from tools.interop.quiet import header_values_muted


@pytest.mark.parametrize("url", ["http://pacs.example.org/dicom-web", "http://10.0.0.7:8042/dicom-web"])
def test_plain_http_to_another_machine_is_refused_unless_allowed(settings, url):
    with pytest.raises(PacsNotConfigured, match="plain http://") as err:
        PacsClient(settings, url=url)
    assert "CXR_AGENT_PACS_ALLOW_INSECURE_REMOTE" in str(err.value) and url not in str(err.value)
    PacsClient(settings.model_copy(update={"pacs_allow_insecure_remote": True}), url=url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8042/dicom-web", "http://localhost/dicom-web",
                                 "http://[::1]:8042/dicom-web", "https://pacs.example.org/dicom-web"])
def test_loopback_or_https_is_accepted(settings, url):
    PacsClient(settings, url=url)


def test_unverified_tls_is_logged_once(settings, caplog, monkeypatch):
    monkeypatch.setattr(dicomweb, "_TLS_WARNED", threading.Event())
    unverified = settings.model_copy(update={"pacs_verify_tls": False})
    with caplog.at_level(logging.WARNING, logger="tools.interop.dicomweb"):
        PacsClient(settings, url="https://pacs.example.org/dicom-web")
        assert not caplog.records  # verification on: nothing to say
        for _ in range(3):
            PacsClient(unverified, url="https://pacs.example.org/dicom-web")
    said = [r for r in caplog.records if "CXR_AGENT_PACS_VERIFY_TLS=false" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_muting_is_per_thread():
    """One thread's muted block neither hides another thread's warnings and log records nor ends
    early when another thread leaves its own block."""
    inside, checked, first_out, second_checked = (threading.Event() for _ in range(4))
    seen: dict[str, bool] = {}
    log = logging.getLogger("pydicom")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    log.addHandler(handler)

    def muted_a() -> None:
        with header_values_muted():
            inside.set()
            checked.wait(5)
        first_out.set()

    def muted_b() -> None:
        with header_values_muted():
            first_out.wait(5)  # the other thread has left its block; this one is still inside
            warnings.warn("PHI-B Quillon^Jane", UserWarning, stacklevel=1)
            log.warning("PHI-B Quillon^Jane")
            second_checked.set()

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a, b = threading.Thread(target=muted_a), threading.Thread(target=muted_b)
            a.start()
            b.start()
            inside.wait(5)
            warnings.warn("visible while another thread is muted", UserWarning, stacklevel=1)
            log.warning("visible log while another thread is muted")
            checked.set()
            second_checked.wait(5)
            a.join(5)
            b.join(5)
            messages = [str(w.message) for w in caught]
    finally:
        log.removeHandler(handler)
    seen["warning"] = "visible while another thread is muted" in messages
    seen["log"] = "visible log while another thread is muted" in records
    assert seen == {"warning": True, "log": True}
    assert not any("PHI-B" in m for m in messages + records)
