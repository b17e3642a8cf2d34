"""The classifier tool: torchxrayvision pathology scores -> vocabulary FindingCalls + heatmaps.

Scores are operating-point-normalised (xrv's op_norm: 0.5 = the model's calibrated threshold),
NOT probabilities; a call is present/absent only when the score clears 0.5 by the configured
margin, uncertain otherwise. Labels the model was never trained on (NaN threshold / empty label)
produce no call at all, so silence is never mistaken for "absent".
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxr_agent.heap import settle
from knowledge.evidence import Artifact, Box, Evidence, FindingCall, Status
from knowledge.vocabulary import XRV_LABELS, display_name, normalize
from tools.base import ToolRequest, builtin_intents
from tools.classifier.heatmap import (
    CropGeometry,
    cam_to_model_input,
    grad_cam,
    peak_box,
    save_heatmap,
    to_original,
)
from tools.classifier.loading import (
    ClassifierWeightsMissing,
    LoadedClassifier,
    classifier_weight_status,  # noqa: F401  (re-exported: the public API lives here)
    download_classifier_weights,  # noqa: F401
    load_classifier,
    pinned_sha256,
    wrap_module,
)
from tools.stop import turn_stop

if TYPE_CHECKING:
    import torch

    from cxr_agent.settings import Settings
    from tools.ingestion.study import Study

TOOL_NAME = "classifier"
_END = object()
HEATMAP_CAP = 3  # report intent: heatmaps for at most this many present findings (highest score first)
RAW_SCORE_MEANING = "sigmoid probability of the model's logit, before operating-point normalisation"

# torchxrayvision label -> vocabulary id. normalize() is preferred; this is the explicit fallback
# (one table, in knowledge/vocabulary.py), so a synonym-table change can never silently drop a label.
XRV_LABEL_MAP: dict[str, str] = dict(XRV_LABELS)


def finding_for_label(label: str) -> str | None:
    """Vocabulary id for an xrv label ('' -> None)."""
    if not label:
        return None
    return normalize(label) or XRV_LABEL_MAP.get(label)


def weights_id(m: LoadedClassifier) -> str | None:
    """Which weights produced a score: ``sha256:<hex>`` of a real file (the catalogue's pin or the hash recorded
    at its first download: both checked before it loaded), the tiny model's seed, else None (unknown)."""
    if m.weights_path:
        return _file_weights(str(m.weights_path))
    if m.profile == "tiny" and m.meta.get("seed") is not None:
        return f"random:seed={m.meta['seed']}"
    return None


@lru_cache(maxsize=8)
def _file_weights(path: str) -> str | None:
    from tools.integrity import recorded_hash

    digest = pinned_sha256(Path(path)) or recorded_hash(Path(path))
    return f"sha256:{digest}" if digest else None


def status_for(score: float, margin: float) -> Status:
    """op-norm score -> status: present above 0.5 + margin, absent below 0.5 - margin, else uncertain
    (the band edges themselves are uncertain)."""
    if score > 0.5 + margin:
        return Status.present
    if score < 0.5 - margin:
        return Status.absent
    return Status.uncertain


def preprocess(study: Study, resolution: int) -> tuple[torch.Tensor, CropGeometry]:
    """xrv's pipeline on a Study: normalize([0,1] -> [-1024,1024]), XRayCenterCrop, resize to R.

    Resizing uses torch's antialiased bilinear interpolation (what xrv's own models apply via
    utils.fix_resolution) instead of XRayResizer's skimage path: same geometry, ~10x faster.
    Normalisation is affine, so it is applied after the resize on the small image.
    """
    import torch
    import torch.nn.functional as F

    pixels = np.asarray(study.pixels, dtype=np.float32)
    h, w = pixels.shape
    geom = CropGeometry.centre_crop(w, h, resolution)
    crop = pixels[geom.y0 : geom.y0 + geom.size, geom.x0 : geom.x0 + geom.size]
    t = torch.from_numpy(np.array(crop, dtype=np.float32, copy=True))[None, None]  # Study pixels are read-only
    if geom.size != resolution:
        t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    t = (t.clamp(0.0, 1.0) * 2.0 - 1.0) * 1024.0
    return t[0], geom


def _halted(stop: threading.Event | None, request: ToolRequest, where: str) -> str | None:
    """Why the call must end now (the reader's Stop, or the call's own timeout), else None. A stopped call
    returns no scores at all: a half-run classifier's output is never recorded as its answer."""
    if stop is not None and stop.is_set():
        return f"stopped by the reader {where}: no scores recorded"
    if request.cancel.is_set():
        return f"cancelled (the call timed out) {where}: no scores recorded"
    return None


@dataclass
class Heatmap:
    """A finding's heatmap on the ORIGINAL image (H, W), values in [0, 1], and its peak box."""

    finding: str
    array: np.ndarray
    box: Box | None
    path: Path | None
    model: str
    score: float | None = None

    def artifact(self) -> Artifact:
        return Artifact(
            kind="heatmap",
            finding=self.finding,
            uri=str(self.path) if self.path else None,
            box=self.box,
            description=f"Grad-CAM of {self.model} for {display_name(self.finding)} (original-image size)",
            meta={"model": self.model, "method": "grad-cam", "shape": list(self.array.shape), "score": self.score},
        )


@dataclass
class _Inference:
    probs: np.ndarray  # (K,) sigmoid probabilities
    scores: np.ndarray  # (K,) op-norm scores (or probabilities when the model has no thresholds)
    activations: torch.Tensor  # (C, h, w) last conv block, for Grad-CAM
    geometry: CropGeometry


class ClassifierTool:
    """torchxrayvision classifier as a CxrTool. Never raises from run(); the model loads lazily,
    once per process (shared cache), so constructing the tool is cheap."""

    name = TOOL_NAME
    intents = builtin_intents("classifier")  # from the one intent table (tools/base.py)
    image_source = True  # its calls read the image: they vote
    label = "the classifier"
    cacheable = True  # its scores depend on the study alone, never on the user's words

    def __init__(self, settings: Settings | None = None, *, model: LoadedClassifier | Any = None) -> None:
        if settings is None:
            from cxr_agent.settings import get_settings

            settings = get_settings()
        self.settings = settings
        if model is not None and not isinstance(model, LoadedClassifier):
            model = wrap_module(model, name=type(model).__name__)
        self._model: LoadedClassifier | None = model

    # ---- model -------------------------------------------------------------------------
    @property
    def model(self) -> LoadedClassifier:
        if self._model is None:
            self._model = load_classifier(self.settings)
            settle()
        return self._model

    @property
    def margin(self) -> float:
        return float(self.settings.classifier_margin)

    # ---- inference ---------------------------------------------------------------------
    def _infer(self, studies: list[Study], batch_size: int = 8) -> list[_Inference]:
        m = self.model
        bs = max(1, batch_size)
        results: list[_Inference] = []
        for start in range(0, len(studies), bs):
            results.extend(self._forward([preprocess(s, m.resolution) for s in studies[start : start + bs]]))
        return results

    def _forward(self, prepped: list[tuple[torch.Tensor, CropGeometry]]) -> list[_Inference]:
        """One batched forward: activations (kept for Grad-CAM), probabilities, op-norm scores."""
        import torch

        m = self.model
        x = torch.stack([t for t, _ in prepped]).to(m.device)
        with torch.no_grad():
            acts = m.features(x)
            probs = torch.sigmoid(m.head(acts).float())
            if m.op_threshs is not None:
                from torchxrayvision.models import op_norm

                scores = op_norm(probs, m.op_threshs)
            else:
                scores = probs
        p, s = probs.cpu().numpy(), scores.cpu().numpy()
        return [_Inference(p[i], s[i], acts[i], geom) for i, (_, geom) in enumerate(prepped)]

    def _calls(self, inf: _Inference) -> list[FindingCall]:
        m = self.model
        kind = "op_norm" if m.op_threshs is not None else "probability"
        calls = []
        for i in m.trained_indices():
            finding = finding_for_label(m.targets[i])
            if finding is None:
                continue
            score = float(inf.scores[i])
            calls.append(
                FindingCall(
                    finding=finding,
                    status=status_for(score, self.margin),
                    score=score,
                    score_kind=kind,
                    raw_score=float(inf.probs[i]),
                    source=self.name,
                    text=f"{m.name}: {m.targets[i]} {kind} score {score:.2f} (0.5 = operating point)",
                )
            )
        return calls

    def _meta(self, inf: _Inference | None = None) -> dict[str, Any]:
        from cxr_agent.settings import DEMO_WARNING

        m = self.model
        untrained = [finding_for_label(t) or t for i, t in enumerate(m.targets) if t and i not in m.trained_indices()]
        meta: dict[str, Any] = {
            "model": m.name,
            "model_id": m.name,
            "weights": weights_id(m),
            "prompt_id": None,  # a classifier reads no prompt
            "profile": m.profile,
            "device": m.device,
            "resolution": m.resolution,
            "score_kind": "op_norm" if m.op_threshs is not None else "probability",
            "score_meaning": "0.5 = the model's operating point; NOT a probability"
            if m.op_threshs is not None
            else "sigmoid probability (this model has no operating points)",
            "raw_score": RAW_SCORE_MEANING,
            "threshold_source": m.threshold_source,
            "margin": self.margin,
            "untrained_labels": untrained,
        }
        if isinstance(meta["weights"], str) and meta["weights"].startswith("sha256:"):
            meta["weights_sha256"] = meta["weights"].removeprefix("sha256:")  # what the audit line records
        if inf is not None:
            meta["crop"] = inf.geometry.as_dict()
        if m.profile == "tiny":
            meta["demo_warning"] = DEMO_WARNING
        return meta

    def _evidence(self, inf: _Inference, started: float) -> Evidence:
        return Evidence(
            tool=self.name,
            calls=self._calls(inf),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            meta=self._meta(inf),
        )

    # ---- public API ----------------------------------------------------------------------
    def classify(self, study: Study) -> Evidence:
        """One FindingCall per trained pathology (no heatmaps). Raises on a missing model."""
        started = time.perf_counter()
        return self._evidence(self._infer([study])[0], started)

    def classify_batch(self, studies: list[Study], batch_size: int = 8) -> list[Evidence]:
        """Same results as classify() per study, run in batches on the device."""
        started = time.perf_counter()
        infs = self._infer(list(studies), batch_size=batch_size)
        per = (time.perf_counter() - started) / max(1, len(infs))
        out = []
        for inf in infs:
            ev = self._evidence(inf, time.perf_counter())
            ev.latency_ms = per * 1000.0
            out.append(ev)
        return out

    def heatmap(self, study: Study, finding: str) -> Heatmap:
        """Grad-CAM of `finding` on the original image, saved as .npy under artifacts_dir/<study id>/."""
        return self._heatmap(study, self._infer([study])[0], finding)

    def classify_sources(
        self,
        sources: list[Any],
        batch_size: int = 8,
        *,
        loader: Callable[[Any], Study] | None = None,
        workers: int = 2,
    ) -> list[Evidence]:
        """Classify many files (paths/bytes) in order: ingestion and preprocessing of the next
        studies run in worker threads while the model runs the current batch (decoders and torch
        release the GIL). A file that fails to load yields Evidence.failure, never an exception."""
        from concurrent.futures import ThreadPoolExecutor

        if loader is None:
            from tools.ingestion.loader import load_study as loader
        res = self.model.resolution

        def prepare(src: Any) -> tuple[torch.Tensor, CropGeometry] | Exception:
            try:
                return preprocess(loader(src), res)
            except Exception as exc:  # reported per file below
                return exc

        out: list[Evidence] = []
        bs = max(1, batch_size)
        todo = iter(sources)
        window: deque = deque()  # at most two batches read ahead: memory stays bounded
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:

            def fill() -> None:
                while len(window) < 2 * bs:
                    src = next(todo, _END)
                    if src is _END:
                        return
                    window.append(pool.submit(prepare, src))

            fill()
            while window:
                started = time.perf_counter()
                chunk = [window.popleft().result() for _ in range(min(bs, len(window)))]
                fill()  # the next batch loads while this one runs through the model
                ok = [c for c in chunk if not isinstance(c, Exception)]
                infs = iter(self._forward(ok)) if ok else iter(())
                per_ms = (time.perf_counter() - started) * 1000.0 / len(chunk)
                for item in chunk:
                    if isinstance(item, Exception):
                        out.append(Evidence.failure(self.name, f"could not read the image: {item}", latency_ms=per_ms))
                    else:
                        ev = self._evidence(next(infs), time.perf_counter())
                        ev.latency_ms = per_ms
                        out.append(ev)
        return out

    def _index_of(self, finding: str) -> int:
        m = self.model
        canon = normalize(finding) or finding
        for i in m.trained_indices():
            if finding_for_label(m.targets[i]) == canon:
                return i
        raise ValueError(f"{m.name} was not trained on {display_name(canon)}; no heatmap available")

    def _heatmap(self, study: Study, inf: _Inference, finding: str) -> Heatmap:
        m = self.model
        idx = self._index_of(finding)
        canon = finding_for_label(m.targets[idx]) or finding
        cam = grad_cam(m.head, inf.activations[None], idx)[0]
        heat = cam_to_model_input(cam, m.resolution)
        box = peak_box(heat, inf.geometry, label=canon)
        full = to_original(heat, inf.geometry)
        path = self._save(study, canon, full)
        return Heatmap(canon, full, box, path, m.name, float(inf.scores[idx]))

    def _save(self, study: Study, finding: str, heat: np.ndarray) -> Path:
        """Reduced (uint8, <= 512 px) owner-only copy, atomic, under the shared disk quota (tools.classifier.heatmap)."""
        safe_id = "".join(c for c in study.id if c.isalnum())[:64] or "study"
        path = Path(self.settings.artifacts_dir) / safe_id / f"classifier-{self.model.name}-{finding}.npy"
        return save_heatmap(heat, path, studies_dir=self.settings.studies_dir,
                            quota_bytes=self.settings.storage_quota_mb * 2**20)

    def run(self, request: ToolRequest) -> Evidence:
        """report: all calls + heatmaps of the top present findings; locate / finding_question:
        all calls + the heatmap (and box) of request.finding."""
        started = time.perf_counter()
        try:
            if request.intent not in self.intents:
                return Evidence.failure(self.name, f"the classifier does not serve the '{request.intent}' intent")
            if request.study is None:
                return Evidence.failure(self.name, "the classifier needs an image: attach a chest X-ray first")
            stop = turn_stop()  # read here, on the call's own thread: the run's config lives in its context
            if halted := _halted(stop, request, "before its forward pass"):
                return Evidence.failure(self.name, halted, latency_ms=(time.perf_counter() - started) * 1000.0)
            inf = self._infer([request.study])[0]
            calls = self._calls(inf)
            meta = self._meta(inf)
            if request.intent == "report":
                present = sorted((c for c in calls if c.status == Status.present), key=lambda c: -(c.score or 0.0))
                targets = [c.finding for c in present[:HEATMAP_CAP]]
            else:
                target = request.finding or (normalize(request.phrase) if request.phrase else None)
                targets = [target] if target else []
                meta["focus"] = target
            artifacts, boxes = [], {}
            for finding in targets:
                if halted := _halted(stop, request, f"before the heatmap of {display_name(finding)}"):
                    return Evidence.failure(self.name, halted, latency_ms=(time.perf_counter() - started) * 1000.0)
                try:
                    hm = self._heatmap(request.study, inf, finding)
                except ValueError as exc:  # finding the model was not trained on
                    meta.setdefault("notes", []).append(str(exc))
                    continue
                artifacts.append(hm.artifact())
                boxes[hm.finding] = hm.box
            calls = [c.model_copy(update={"box": boxes[c.finding]}) if c.finding in boxes else c for c in calls]
            return Evidence(
                tool=self.name,
                calls=calls,
                artifacts=artifacts,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                meta=meta,
            )
        except ClassifierWeightsMissing as exc:
            return Evidence.failure(self.name, str(exc), latency_ms=(time.perf_counter() - started) * 1000.0)
        except Exception as exc:  # never raise into the graph
            return Evidence.failure(
                self.name,
                f"classifier failed: {type(exc).__name__}: {exc}",
                latency_ms=(time.perf_counter() - started) * 1000.0,
            )
