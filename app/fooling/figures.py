"""Pictures of a run: the labelled grid of best images (like the paper's figures) and the
confidence curve. Used by the command line and by the job runner."""

from __future__ import annotations

from PIL import Image, ImageDraw

from app.fooling.base import Snapshot


def labelled_grid(snap: Snapshot, labels: list[str], cell: int = 112, cols: int = 5) -> Image.Image:
    rows = (len(snap.targets) + cols - 1) // cols
    cols = min(cols, len(snap.targets))
    pad = 28
    grid = Image.new("RGB", (cols * cell, rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (t, img, conf) in enumerate(zip(snap.targets, snap.images, snap.confidence, strict=True)):
        arr = (img.clamp(0, 1) * 255).round().byte()
        pil = Image.fromarray(arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy())
        x, y = (i % cols) * cell, (i // cols) * (cell + pad)
        grid.paste(pil.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
        draw.text((x + 4, y + cell + 2), f"{labels[t][:16]}", fill="black")
        draw.text((x + 4, y + cell + 14), f"{100 * float(conf):.2f}%", fill="black")
    return grid


def confidence_curve(history: list[dict], title: str) -> Image.Image:
    """Best confidence (min / median / max over targets) against evaluations, drawn with PIL so
    the command line needs no plotting library."""
    w, h, left, bottom, top, right = 640, 360, 56, 40, 28, 16
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    x_max = max(r["evaluations"] for r in history) or 1
    pw, ph = w - left - right, h - top - bottom

    def xy(ev: float, c: float) -> tuple[float, float]:
        return left + pw * ev / x_max, top + ph * (1 - c)

    d.rectangle([left, top, left + pw, top + ph], outline="#888")
    for c in (0.25, 0.5, 0.75):
        d.line([xy(0, c), xy(x_max, c)], fill="#eee")
        d.text((8, xy(0, c)[1] - 6), f"{c:.0%}", fill="#555")
    d.text((8, top - 6), "100%", fill="#555")
    d.text((left, h - bottom + 8), "0", fill="#555")
    d.text((left + pw - 60, h - bottom + 8), f"{x_max:,} evals", fill="#555")
    d.text((left, 8), title, fill="black")
    for key, colour in (("min", "#d33"), ("median", "#36c"), ("max", "#2a2")):
        pts = [xy(r["evaluations"], r[key]) for r in history]
        d.line(pts, fill=colour, width=2)
        d.text((left + pw - 150 + 50 * ("min", "median", "max").index(key), top + 4), key, fill=colour)
    return img
