"""Grad-CAM heatmaps for the classifier, mapped back through xrv's centre crop and resize.

The model sees a square centre crop of the study resized to R x R; a heatmap is only useful to a
clinician on the ORIGINAL image, so `CropGeometry` records the crop offset and scale and every
heatmap/box goes back through it. Regions outside the crop were never seen: their heat is 0.

Stored heatmaps are reduced (uint8, longest side STORED_MAX_SIDE): three full-resolution float
maps per turn would outgrow the study they explain; the in-memory Heatmap keeps full size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from knowledge.evidence import Box

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

BOX_LEVEL = 0.5  # the box surrounds the connected region above this fraction of the peak


@dataclass(frozen=True)
class CropGeometry:
    """xrv's XRayCenterCrop + XRayResizer as numbers: model pixel (u, v) <-> original pixel."""

    width: int  # original image
    height: int
    x0: int  # crop's top-left corner in the original image
    y0: int
    size: int  # crop side (min(width, height))
    resolution: int  # model input side

    @classmethod
    def centre_crop(cls, width: int, height: int, resolution: int) -> CropGeometry:
        size = min(width, height)
        # exactly xrv.datasets.XRayCenterCrop.crop_center
        return cls(width, height, width // 2 - size // 2, height // 2 - size // 2, size, resolution)

    @property
    def scale(self) -> float:
        """Original pixels per model pixel."""
        return self.size / self.resolution

    def to_original(self, u: float, v: float) -> tuple[float, float]:
        """Model-input coordinates (pixel edges, 0..R) -> original-image pixel coordinates."""
        return self.x0 + u * self.scale, self.y0 + v * self.scale

    def as_dict(self) -> dict[str, int]:
        return {"x0": self.x0, "y0": self.y0, "crop": self.size, "resolution": self.resolution}


def grad_cam(
    head: Callable[[torch.Tensor], torch.Tensor], activations: torch.Tensor, index: int
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of logit `index` w.r.t. the last conv block's activations.

    Uses torch.autograd.grad on a detached copy (no module hooks), so threads sharing one model
    never see each other's gradients. Returns (B, h, w), >= 0, unnormalised.
    """
    import torch

    acts = activations.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = head(acts)
        (grads,) = torch.autograd.grad(logits[:, index].sum(), acts)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * acts.detach()).sum(dim=1))


def cam_to_model_input(cam: torch.Tensor, resolution: int) -> np.ndarray:
    """(h, w) CAM -> (R, R) float32 in [0, 1] over the model input (bilinear, pixel-centre aligned)."""
    import torch.nn.functional as F

    up = F.interpolate(cam[None, None].float(), size=(resolution, resolution), mode="bilinear", align_corners=False)
    arr = up[0, 0].cpu().numpy()
    peak = float(arr.max())
    return (arr / peak).astype(np.float32) if peak > 0 else np.zeros_like(arr, dtype=np.float32)


def to_original(heat: np.ndarray, geom: CropGeometry) -> np.ndarray:
    """(R, R) model-input heatmap -> (H, W) original-image heatmap; zeros outside the crop."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
    crop = F.interpolate(t, size=(geom.size, geom.size), mode="bilinear", align_corners=False)[0, 0].numpy()
    out = np.zeros((geom.height, geom.width), dtype=np.float32)
    out[geom.y0 : geom.y0 + geom.size, geom.x0 : geom.x0 + geom.size] = np.clip(crop, 0.0, 1.0)
    return out


def peak_box(heat: np.ndarray, geom: CropGeometry, *, level: float = BOX_LEVEL, label: str | None = None) -> Box | None:
    """Box (relative to the ORIGINAL image) around the connected region holding the peak.

    Computed on the model-input heatmap and mapped through the crop geometry; None when there
    is no positive evidence at all.
    """
    from scipy import ndimage

    peak = float(heat.max())
    if not np.isfinite(peak) or peak <= 0:
        return None
    mask = heat >= level * peak
    labels, _ = ndimage.label(mask)
    py, px = np.unravel_index(int(np.argmax(heat)), heat.shape)
    ys, xs = np.nonzero(labels == labels[py, px])
    x1, y1 = geom.to_original(float(xs.min()), float(ys.min()))
    x2, y2 = geom.to_original(float(xs.max() + 1), float(ys.max() + 1))
    w, h = float(geom.width), float(geom.height)
    return Box(
        x1=min(max(x1 / w, 0.0), 1.0),
        y1=min(max(y1 / h, 0.0), 1.0),
        x2=min(max(x2 / w, 0.0), 1.0),
        y2=min(max(y2 / h, 0.0), 1.0),
        label=label,
    )


# ---- storage -----------------------------------------------------------------------------------
STORED_MAX_SIDE = 512  # px: a Grad-CAM holds 7x7 to 16x16 cells of information; 512 is plenty to overlay
STORED_DTYPE = np.uint8  # 256 heat levels: what a colour map can show


def stored_heatmap(heat: np.ndarray, max_side: int = STORED_MAX_SIDE) -> np.ndarray:
    """(H, W) heat in [0, 1] -> uint8 (0..255) with the same aspect ratio, longest side <= max_side.

    The stored map covers the whole original image (zeros outside the crop), so a viewer that
    stretches it over the image (ui.overlays.blend_heatmap resizes any size) draws it in place."""
    from PIL import Image

    arr = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    h, w = arr.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        arr = np.asarray(Image.fromarray(arr, mode="F").resize(size, Image.Resampling.BOX), dtype=np.float32)
    return np.rint(np.clip(arr, 0.0, 1.0) * 255).astype(STORED_DTYPE)


def save_heatmap(heat: np.ndarray, path: Path, *, studies_dir: Path | None = None, quota_bytes: int = 0) -> Path:
    """Write the reduced heatmap atomically, owner-only (0600 in a 0700 folder), then apply the
    disk quota shared with the study store (the heatmap's own study is never evicted for it)."""
    from tools.ingestion.disk_quota import atomic_write, enforce_quota, private_dir

    small = stored_heatmap(heat)
    private_dir(path.parent.parent)  # the artifacts root too, should an older version have made it 0755
    atomic_write(path, lambda fh: np.save(fh, small, allow_pickle=False))
    if studies_dir is not None and quota_bytes > 0:
        enforce_quota(studies_dir, path.parent.parent, quota_bytes, keep=(path.parent.name,))
    return path
