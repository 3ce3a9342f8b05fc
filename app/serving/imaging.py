"""Uploaded bytes -> checked PIL image -> tensor in a model's own input space, and back to PNG.

Every decode is guarded: format allow-list, pixel limit read from the header before any
pixel is decoded (decompression bombs), and truncated or corrupt data raise ImageError.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from app.errors import Refused

ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF"}


class ImageError(Refused, ValueError):
    """Bad image input: "malformed" unless said otherwise (too large, not an image at all)."""

    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(kind, message)


def decode(data: bytes, max_pixels: int) -> Image.Image:
    return load_image(open_image(data, max_pixels))


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header only and check format and pixel count; no pixel is decoded yet."""
    if not data:
        raise ImageError("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # over Pillow's own limits
        raise ImageError(f"image has too many pixels ({exc})", "too_large") from exc
    except (Image.UnidentifiedImageError, OSError) as exc:
        raise ImageError(
            "not a readable image: send PNG, JPEG, WebP, BMP or GIF", "unsupported"
        ) from exc
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}", "too_large")
    return img


def load_image(img: Image.Image) -> Image.Image:
    """Decode the pixels (the first frame of an animation); corrupt data raises ImageError."""
    try:
        img.seek(0)  # GIF and other animations: the first frame
        img.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"the image data is truncated or corrupt ({exc})") from exc
    return img


def _to_unit(arr: np.ndarray) -> torch.Tensor:
    """uint8 HxW or HxWxC -> float (C, H, W) in [0, 1].

    Done in NumPy on purpose: request threads must not start torch's OpenMP pool, or the one
    compute thread that runs the models loses its second core (see app/serving/compute.py)."""
    a = np.asarray(arr, dtype=np.float32) / np.float32(255.0)
    a = a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))
    return torch.from_numpy(a)


def stack(images: list[torch.Tensor]) -> torch.Tensor:
    """Batch (C, H, W) tensors without a torch op on the calling thread (see _to_unit)."""
    if len(images) == 1:
        return images[0][None]
    return torch.from_numpy(np.stack([t.numpy() for t in images]))


def _mnist_style(gray: Image.Image, size: int) -> np.ndarray:
    """A photo or drawing of a digit -> MNIST convention: white ink on black, digit fitted into a
    20x20 box and centred by its centre of mass in 28x28 (LeCun's preprocessing)."""
    a = np.asarray(gray, dtype=np.float32)
    # MNIST is light ink on a dark background; a light background (paper, canvas) is inverted.
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    if border.mean() > 127:
        a = 255.0 - a
    ink = a > 0.15 * max(a.max(), 1.0)
    if not ink.any():
        return np.zeros((size, size), dtype=np.uint8)
    rows, cols = np.where(ink)
    a = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    box = round(size * 20 / 28)
    scale = box / max(a.shape)
    nh, nw = max(1, round(a.shape[0] * scale)), max(1, round(a.shape[1] * scale))
    digit = np.asarray(Image.fromarray(a.clip(0, 255).astype(np.uint8)).resize((nw, nh), Image.LANCZOS))
    canvas = np.zeros((size, size), dtype=np.float32)
    total = digit.sum()
    if total > 0:
        cy = (digit.sum(1) * np.arange(nh)).sum() / total
        cx = (digit.sum(0) * np.arange(nw)).sum() / total
    else:
        cy, cx = nh / 2, nw / 2
    top = int(np.clip(round(size / 2 - cy), 0, size - nh))
    left = int(np.clip(round(size / 2 - cx), 0, size - nw))
    canvas[top : top + nh, left : left + nw] = digit
    return canvas.clip(0, 255).astype(np.uint8)


def to_model_input(img: Image.Image, input_shape: tuple[int, int, int], preprocess: str) -> torch.Tensor:
    """PIL image -> (C, H, W) float tensor in [0, 1], 8-bit exact.

    An image that already has the model's input size is taken pixel for pixel, so a PNG saved
    by a fooling run scores exactly as it did during the run.
    """
    c, h, w = input_shape
    img = ImageOps.exif_transpose(img) if img.format == "JPEG" else img
    mode = "L" if c == 1 else "RGB"
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent areas become white for RGB, black for grayscale digits drawn on a canvas.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255) if c == 3 else (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba)
    img = img.convert(mode)
    if img.size == (w, h):
        return _to_unit(np.asarray(img))
    if preprocess == "mnist":
        return _to_unit(_mnist_style(img, h))
    if preprocess == "center-crop":
        # The usual ImageNet evaluation: shorter side to size/0.875, then a centre crop.
        short = round(min(h, w) / 0.875)
        img = ImageOps.fit(img.resize(_short_side(img.size, short), Image.BILINEAR), (w, h), Image.BILINEAR)
        return _to_unit(np.asarray(img))
    return _to_unit(np.asarray(img.resize((w, h), Image.BILINEAR)))


def _short_side(size: tuple[int, int], short: int) -> tuple[int, int]:
    w, h = size
    s = short / min(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid that PNG stores: what is scored is what is saved."""
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def to_png(x: torch.Tensor) -> bytes:
    """(C, H, W) tensor in [0, 1] -> PNG bytes (grayscale for C=1)."""
    arr = (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu()
    arr = arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()
    return png_bytes(Image.fromarray(arr))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
