"""Reviews on disk: owner-only, one folder per thread, a signed version written once and never again.

Why files under the data dir: a review must outlive the UI session and follow its thread's retention
(``forget_reviews`` is called when a thread is forgotten or expires). Layout:
``<data_dir>/reviews/<sha256(thread)[:32]>/draft-<study>.json`` (the editable draft, replaced on save)
and ``signed-<review_id>.json`` (created exclusively, then made read-only; its digest is checked on
every read, so an altered file is refused), and ``pushed-<study>.json``: the AI SRs sent to the PACS
for that study (UIDs only), which a verified SR references. Dirs 0700, files 0600 (signed: 0400).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from agents.review.model import Review, ReviewError, ReviewSigned, SignedReview
from tools.interop.signed import SRRef

if TYPE_CHECKING:
    from cxr_agent.settings import Settings


def reviews_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / "reviews"


def thread_key(thread_id: str) -> str:
    """The folder name of a thread's reviews (the thread id itself is not written to disk)."""
    return hashlib.sha256(str(thread_id).encode()).hexdigest()[:32]


_key = thread_key


class ReviewStore:
    """Drafts and signed versions of the reviews of every thread under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_settings(cls, settings: Settings) -> ReviewStore:
        return cls(reviews_root(settings))

    def _dir(self, thread_id: str, create: bool = False) -> Path:
        d = self.root / _key(thread_id)
        if create:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            d.mkdir(exist_ok=True, mode=0o700)
            os.chmod(self.root, 0o700)
            os.chmod(d, 0o700)
        return d

    def save_draft(self, review: Review) -> Path:
        """Keep an unsigned review to continue later (replaced by each save)."""
        if review.signed:
            raise ReviewSigned("a signed review is saved with save_signed, once")
        path = self._dir(review.thread_id, create=True) / f"draft-{review.study_id}.json"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".draft-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(review.model_dump_json())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return path

    def load_draft(self, thread_id: str, study_id: str) -> Review | None:
        path = self._dir(thread_id) / f"draft-{study_id}.json"
        return Review.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None

    def save_signed(self, signed: SignedReview) -> Path:
        """Write a signed version once (an existing one is never overwritten) and drop the draft."""
        signed.check()
        if signed.supersedes is not None and self.get(signed.thread_id, signed.supersedes) is None:
            raise ReviewError(f"version {signed.version} supersedes {signed.supersedes}, which this thread does not hold")
        d = self._dir(signed.thread_id, create=True)
        path = d / f"signed-{signed.review_id}.json"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ReviewSigned(f"signed review {signed.review_id} is already stored; a signed review is never "
                               "rewritten") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(signed.model_dump_json())
        os.chmod(path, 0o400)
        with contextlib.suppress(FileNotFoundError):
            (d / f"draft-{signed.study_id}.json").unlink()
        return path

    def signed(self, thread_id: str, study_id: str | None = None) -> list[SignedReview]:
        """The thread's signed versions (of one study, if given), oldest first, each digest-checked."""
        d = self._dir(thread_id)
        out = [SignedReview.model_validate_json(p.read_text(encoding="utf-8")).check()
               for p in d.glob("signed-*.json")] if d.is_dir() else []
        return sorted((s for s in out if study_id is None or s.study_id == study_id),
                      key=lambda s: (s.signed_at, s.version))

    def get(self, thread_id: str, review_id: str) -> SignedReview | None:
        path = self._dir(thread_id) / f"signed-{review_id}.json"
        return SignedReview.model_validate_json(path.read_text(encoding="utf-8")).check() if path.is_file() else None

    def current(self, thread_id: str, study_id: str) -> SignedReview | None:
        """The newest signed version not superseded by another."""
        versions = self.signed(thread_id, study_id)
        superseded = {s.supersedes for s in versions}
        live = [s for s in versions if s.review_id not in superseded]
        return live[-1] if live else None

    def all_signed(self) -> list[SignedReview]:
        """Every signed version of every thread (for export)."""
        if not self.root.is_dir():
            return []
        out = [SignedReview.model_validate_json(p.read_text(encoding="utf-8")).check()
               for p in sorted(self.root.glob("*/signed-*.json"))]
        return sorted(out, key=lambda s: (s.signed_at, s.version))

    def record_pushed_sr(self, thread_id: str, study_id: str, ref: SRRef) -> Path:
        """Remember an AI SR sent to the PACS for the thread's study (a later verified SR references it)."""
        refs = self.pushed_srs(thread_id, study_id)
        if ref not in refs:
            refs.append(ref)
        path = self._dir(thread_id, create=True) / f"pushed-{study_id}.json"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pushed-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump([{"study_uid": r.study_uid, "series_uid": r.series_uid, "sop_uid": r.sop_uid} for r in refs], f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return path

    def pushed_srs(self, thread_id: str, study_id: str) -> list[SRRef]:
        """The AI SRs pushed for the thread's study, oldest first."""
        path = self._dir(thread_id) / f"pushed-{study_id}.json"
        if not path.is_file():
            return []
        try:
            return [SRRef(str(r["study_uid"]), str(r["series_uid"]), str(r["sop_uid"]))
                    for r in json.loads(path.read_text(encoding="utf-8"))]
        except (ValueError, KeyError, TypeError) as exc:
            raise ReviewError(f"the record of pushed SRs for study {study_id[:12]} is unreadable ({exc})") from None

    def sweep(self, live_threads: Iterable[str], older_than: float) -> int:
        """Delete the reviews of every thread not in ``live_threads`` whose folder last changed before
        ``older_than`` (epoch seconds: a review saved while the thread list was read is kept); returns
        how many threads' reviews went."""
        if not self.root.is_dir():
            return 0
        keep = {thread_key(t) for t in live_threads}
        n = 0
        for d in self.root.iterdir():
            if d.is_dir() and d.name not in keep and d.stat().st_mtime < older_than:
                shutil.rmtree(d)
                n += 1
        return n

    def forget(self, thread_id: str) -> int:
        """Delete the thread's drafts and signed versions; returns how many files went."""
        d = self._dir(thread_id)
        if not d.is_dir():
            return 0
        n = len([p for p in d.iterdir() if p.is_file()])
        shutil.rmtree(d)
        return n


def forget_reviews(settings: Settings, thread_id: str) -> int:
    """The retention hook: a forgotten or expired thread takes its reviews with it."""
    return ReviewStore.for_settings(settings).forget(thread_id)


def dump_json(signed: SignedReview) -> str:
    return json.dumps(signed.model_dump(mode="json"), indent=2)
