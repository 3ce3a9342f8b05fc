"""Batches of images sent as NumPy .npy bytes (POST /api/v1/score/tensor): read without pickle,
checked against a model's input before any pixel is touched.

The header is parsed first, so a wrong dtype, shape or row count is refused without reading (or
allocating) the data; the pixels are then viewed in place (np.frombuffer), not copied."""

from __future__ import annotations

import io
import math

import numpy as np
import torch

from app.errors import Refused


class TensorError(Refused, ValueError):
    """A batch the server will not score: "invalid" unless said otherwise; the message says why."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(kind, message)


MAX_HEADER = 4096  # an (N, C, H, W) uint8 header is about 128 bytes


def read_npy(data: bytes, input_shape: tuple[int, int, int], max_rows: int) -> np.ndarray:
    """.npy bytes -> a C-contiguous uint8 (N, C, H, W) array at ``input_shape``, or TensorError."""
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
    except ValueError:
        raise TensorError("the body is not a NumPy .npy file (save one with numpy.save)", "malformed") from None
    try:
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=MAX_HEADER)
        else:
            raise TensorError(f".npy format {version[0]}.{version[1]} is not read here; numpy.save writes 1.0",
                              "malformed")
    except TensorError:
        raise
    except Exception as exc:  # noqa: BLE001 (a header that is not a dict literal: ValueError, SyntaxError, TokenError)
        raise TensorError(f"the .npy header is not valid ({exc})", "malformed") from None
    if dtype.hasobject:
        raise TensorError("object arrays (pickled data) are refused: send uint8 pixels")
    if dtype != np.uint8:
        raise TensorError(f"dtype is {dtype}; send uint8 pixels (0-255), e.g. array.astype(numpy.uint8)")
    c, h, w = input_shape
    if len(shape) != 4 or tuple(shape[1:]) != (c, h, w):
        raise TensorError(f"shape is {tuple(shape)}; this model takes (N, {c}, {h}, {w}) (N images, "
                          f"channels first, at the model's input size)")
    n = shape[0]
    if n == 0:
        raise TensorError("the array has no rows: send at least one image")
    if n > max_rows:
        raise TensorError(f"{n} rows; at most {max_rows} per request (FOOLING_MAX_TENSOR_ROWS)", "too_large")
    start, size = fp.tell(), n * c * h * w
    if len(data) - start != size:
        raise TensorError(f"the data holds {len(data) - start} bytes; shape {tuple(shape)} needs {size}", "malformed")
    arr = np.frombuffer(data, dtype=np.uint8, count=size, offset=start)
    if fortran:
        return np.ascontiguousarray(arr.reshape(tuple(reversed(shape))).transpose(3, 2, 1, 0))
    return arr.reshape(shape)


def to_unit(rows: np.ndarray) -> torch.Tensor:
    """uint8 rows -> float32 in [0, 1], in NumPy (request threads keep off torch's thread pool)."""
    return torch.from_numpy(rows.astype(np.float32) * np.float32(1 / 255))


def chunk_rows(input_shape: tuple[int, int, int], pixels_per_chunk: int) -> int:
    """Rows per forward pass so that one pass (one compute-thread turn) stays within the budget."""
    return max(1, pixels_per_chunk // math.prod(input_shape))
