"""Decoding and preprocessing into each model's input space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from app.serving.imaging import ImageError, decode, quantize, to_model_input, to_png
from tests.conftest import png_bytes


def test_exact_size_images_pass_through_pixel_for_pixel():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    x = to_model_input(decode(png_bytes(Image.fromarray(arr)), 10**6), (1, 28, 28), "mnist")
    assert x.shape == (1, 28, 28)
    assert torch.equal((x * 255).round().to(torch.uint8)[0], torch.from_numpy(arr))
    rgb = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    y = to_model_input(decode(png_bytes(Image.fromarray(rgb)), 10**6), (3, 224, 224), "center-crop")
    assert torch.equal((y * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(rgb))


def test_png_round_trip_is_exact():
    x = quantize(torch.rand(3, 20, 30))
    back = to_model_input(decode(to_png(x), 10**6), (3, 20, 30), "stretch")
    assert torch.equal(back, x)
    g = quantize(torch.rand(1, 28, 28))
    assert torch.equal(to_model_input(decode(to_png(g), 10**6), (1, 28, 28), "mnist"), g)


def test_center_crop_and_stretch_shapes():
    img = Image.new("RGB", (640, 480), (255, 0, 0))
    for mode in ("center-crop", "stretch"):
        x = to_model_input(img, (3, 224, 224), mode)
        assert x.shape == (3, 224, 224)
        assert torch.allclose(x[:, 100, 100], torch.tensor([1.0, 0.0, 0.0]))


def test_mnist_style_inverts_light_background_and_centres():
    img = Image.new("L", (300, 200), 255)
    img.paste(0, (10, 10, 40, 120))  # a dark bar near the top-left corner
    x = to_model_input(img, (1, 28, 28), "mnist")[0]
    assert x.max() > 0.9 and x[0].sum() == 0 and x[:, 0].sum() == 0  # white ink on black
    rows, cols = torch.nonzero(x > 0.5, as_tuple=True)
    assert abs(rows.float().mean() - 13.5) < 2.5 and abs(cols.float().mean() - 13.5) < 2.5
    assert rows.max() - rows.min() <= 20  # fitted into the 20x20 box


def test_blank_canvas_gives_blank_input():
    assert to_model_input(Image.new("L", (100, 100), 255), (1, 28, 28), "mnist").sum() == 0


def test_transparent_drawing_is_flattened():
    img = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    img.paste((255, 255, 255, 255), (20, 5, 30, 45))
    x = to_model_input(img, (1, 28, 28), "mnist")
    assert x.max() > 0.9 and x[0, 0, 0] == 0


@pytest.mark.parametrize("data,kind", [(b"", "malformed"), (b"GIF89a garbage", "unsupported"),
                                       (b"%PDF-1.4", "unsupported")])
def test_decode_rejects(data, kind):
    with pytest.raises(ImageError) as err:
        decode(data, 10**6)
    assert err.value.kind == kind  # the web layer answers 400 and 415 (tests/test_api_score.py)


def test_pixel_limit_checked_from_header():
    with pytest.raises(ImageError) as err:
        decode(png_bytes(Image.new("L", (200, 200))), 100 * 100)
    assert err.value.kind == "too_large"
