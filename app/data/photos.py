"""Real photos for the ImageNet controls of studies and the quiz, fetched from Debian's packages.

Each photo is listed with the package and file it comes from, the sha256 of that file, what it
shows as an ImageNet label, and its licence. ``fetch`` downloads the packages with apt-get (only
the files listed are kept), checks every file's sha256, puts it on a white background where it has
transparency, scales it to 256 pixels on its shorter side and writes ``DATA/photos/debian/``
with a ``photos.json``. Each was kept because EfficientNet-Lite0 names it with this label (top-1);
tests check the list and the labels.

An operator adds photos of their own as a folder under ``DATA/photos/`` holding the images and a
``photos.json``: ``[{"file": "...", "label": "an ImageNet label", "licence": "...", "source": "..."}]``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

PACKAGES = {  # package: (version, path of the listed files inside it, licence)
    "tuxpaint-stamps-default": ("2022.06.04-1", "usr/share/tuxpaint/stamps/",
                                "GPL-2 (Tux Paint stamps, Bill Kendrick and contributors)"),
    "jigzo-data": ("0.6.1-7.1", "usr/share/games/jigzo/puzzles/00_default/", "GPL-2+ (jigzo, Maarten de Boer)"),
}
PHOTOS = [  # (package, file, ImageNet label, sha256 of the file in the package)
    ("tuxpaint-stamps-default", "animals/birds/duck.png", "drake",
     "7770d71308241fe7f0a4f99fc2aabe8ac16e4cfff6e37d13e61fab459c8aed33"),
    ("tuxpaint-stamps-default", "animals/birds/pink_flamingo.png", "flamingo",
     "76f05c493f655efeaa386521bea913cd41bc9a65318a4ff973a3c4ef1b656643"),
    ("tuxpaint-stamps-default", "animals/insects/Brown_slug.png", "slug",
     "e06936e61c58a4588b7d83fdbf31e493f0561c337e052b9f3165ae3d5d2ec85e"),
    ("tuxpaint-stamps-default", "animals/insects/Woodlouse.png", "isopod",
     "fcb1e419dd9afc40650c60e0eb9922282cee439a37b0f4b29bd5f352d280b88f"),
    ("tuxpaint-stamps-default", "animals/insects/fly.png", "fly",
     "a4e05ba0ce724d7550c349d0002c2588d0616b2c8a2af92d4caf3d6815a7dac0"),
    ("tuxpaint-stamps-default", "animals/insects/mantis.png", "mantis",
     "bf00815bed1b777432d7fa6ce1171b226caa794299dbb1e2994f29544d7ceaae"),
    ("tuxpaint-stamps-default", "animals/mammals/apes/gorilla.png", "gorilla",
     "a9b45cb2f0acae32161d3ab45505219c6083a18e9412e5439cdd104fcbb53a85"),
    ("tuxpaint-stamps-default", "animals/mammals/aquatic/otter.png", "otter",
     "875ec74ddc9cf664ad988ddfa1972739260b2c59bf4963d06b3b337f31594307"),
    ("tuxpaint-stamps-default", "animals/mammals/aquatic/sea_lion.png", "sea lion",
     "0467907bf6b79bc0768fd2ff8a1289b56d1bc2cb83dce30e45d1adf72243fb51"),
    ("tuxpaint-stamps-default", "animals/mammals/bears/european-bear.png", "brown bear",
     "bab9ff97e54a0a1961c7411f701f8f156b1d353a5e86cf85c6bc675aea8a32ff"),
    ("tuxpaint-stamps-default", "animals/mammals/bovines/sheep.png", "ram",  # ImageNet's one sheep class
     "170207d37257b4186b4d2311a6a586ae8387c0dff95ce533d272f104a68785c3"),
    ("tuxpaint-stamps-default", "animals/mammals/cats/tiger_sumatran.png", "tiger",
     "0b80b05c2920d0dbe788c377149a9d0ba19b63ef5ea809e1234ab837f5c48af6"),
    ("tuxpaint-stamps-default", "animals/mammals/equines/zebra.png", "zebra",
     "f4a1329606b3d77b7064c8c42d3e247f522f1a48f852ef787a963ecf819f0a8c"),
    ("tuxpaint-stamps-default", "animals/mammals/pig_golden.png", "hog",
     "10648b2307bf0a71b9ecc602191d6b789a4e02968044b22a8490c313d6fec091"),
    ("tuxpaint-stamps-default", "animals/mammals/pig_golden2.png", "hog",
     "24e5e786150629381fb66a6efbbebad1d893efbdbae331fb245b832a1b37b07f"),
    ("tuxpaint-stamps-default", "food/fruit/Strawberry2.png", "strawberry",
     "c5e7fe18d8419d048e44d3aba3f188fe5774b569ccb6c08230cccf70bbb872f6"),
    ("tuxpaint-stamps-default", "food/fruit/cherimoya.png", "custard apple",
     "64a3a817dd56f240ce42b4d2d31679828bbf4f020e57cbe0f8dc00967e3f5b8b"),
    ("tuxpaint-stamps-default", "hobbies/music/percussion/drum_tomtom_floor.png", "drum",
     "b5ab0ab0670fd6394051de6c41878404f02ae16a913e01312299f771b87d2704"),
    ("tuxpaint-stamps-default", "hobbies/music/percussion/drumkit.png", "drum",
     "e1265e3784e31718e44c3853d9c875a3d2a718e537ead50b9ee2619d3e270faf"),
    ("tuxpaint-stamps-default", "household/toilet.png", "toilet seat",
     "a219bcbb3c9cc7d646043b12b35a65e2d434f7ccf38a887d94e40c029bc73133"),
    ("tuxpaint-stamps-default", "medical/stethoscope.png", "stethoscope",
     "65315bda7805f30915d3444398564d41502017d708158e078930674400333a23"),
    ("tuxpaint-stamps-default", "military/paratrooper.png", "parachute",
     "b08823461f6a5a9aabefe14ae440514bdd8a317307bdf57a8e42325cf449e35c"),
    ("tuxpaint-stamps-default", "military/vehicles/bradley.png", "tank",  # "tank, army tank, armored combat vehicle"
     "361bdb9646c7c9729ce3fc4ff83a5d5fe4bf9af1117bb68688e3ac23694f82cf"),
    ("tuxpaint-stamps-default", "military/vehicles/f22_raptor.png", "warplane",
     "1ac66d968448e318531288e682096258dba99e18763fc6651924be576e6e4f2e"),
    ("tuxpaint-stamps-default", "plants/mushrooms/cep.png", "bolete",
     "4614efa2174eaa2e34e3bbba6291a791e5be0278348620b0eb1bef58d781800a"),
    ("tuxpaint-stamps-default", "plants/mushrooms/cep-2.png", "bolete",
     "677bd4b79a64192604ba8672db3f54de19b9d867044d2f490a4c9be2f2b4a304"),
    ("tuxpaint-stamps-default", "vehicles/emergency/firetruck.png", "fire engine",
     "e2049145f4829b7f30342c6d0143524014894bab8928ea1b6daa27f3f1b610c0"),
    ("tuxpaint-stamps-default", "vehicles/flight/balloon360.png", "balloon",
     "4107fd22835366e593d32e35e574a7ff919b316704791dc78df7851594a451db"),
    ("tuxpaint-stamps-default", "vehicles/garbagetruck.png", "garbage truck",
     "dd14dd9ca0b5b5268a049dd5e0f8f1349225fc79dc7eefa075bb59fcab71ed31"),
    ("tuxpaint-stamps-default", "vehicles/7spoke256.png", "car wheel",
     "115e6552b4213d0b0991ffe806646510a2980814a91c2ef58ead9edc2852c929"),
    ("jigzo-data", "gorilla2-3x3.pzl", "gorilla",  # a jigzo puzzle: a header, then a JPEG
     "d8b8b155829703622b1f52af2fcafc8865b1c5fbd54b8e3368c7f820aaf36fda"),
]
SHORTER_SIDE = 256
FOLDER = "debian"


class PhotosUnavailable(RuntimeError):
    pass


def folder(data_dir: Path) -> Path:
    return Path(data_dir) / "photos" / FOLDER


def name_of(path: str) -> str:
    return path.replace("/", "-").rsplit(".", 1)[0] + ".jpg"


def fetched(data_dir: Path) -> bool:
    index = folder(data_dir) / "photos.json"
    return index.is_file() and len(json.loads(index.read_text())) == len(PHOTOS)


def to_photo(data: bytes) -> Image.Image:
    """The picture in a listed file: on white where it is transparent, 256 pixels on its shorter side."""
    start = data.find(b"\xff\xd8\xff") if not data.startswith(b"\x89PNG") else 0
    img = Image.open(io.BytesIO(data[max(start, 0):]))
    img = img.convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    white.alpha_composite(img)
    img = white.convert("RGB")
    scale = SHORTER_SIDE / min(img.size)
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)


def fetch(data_dir: Path, log=print) -> Path:
    """Download the packages, keep the listed files (sha256-checked), write the photos and their list."""
    out = folder(data_dir)
    if fetched(data_dir):
        return out
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PhotosUnavailable("the control photos come from Debian packages, and this machine has no apt-get: "
                                "add photos of your own under DATA/photos/<folder>/ with a photos.json (see "
                                "docs/classroom.md)")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for package, (version, inside, _licence) in PACKAGES.items():
            log(f"downloading {package} {version} ...")
            got = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=tmp, capture_output=True,
                                 text=True)
            debs = list(Path(tmp).glob(f"{package}_*.deb"))
            if got.returncode != 0 or not debs:
                raise PhotosUnavailable(f"apt-get could not download {package} {version}: "
                                        f"{(got.stderr or got.stdout).strip().splitlines()[-1:]}")
            members = [f"./{inside}{path}" for p, path, _, _ in PHOTOS if p == package]
            tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", tmp, *members], stdin=tar.stdout, check=True)
            tar.wait()
        for package, path, label, sha in PHOTOS:
            version, inside, licence = PACKAGES[package]
            data = (Path(tmp) / inside / path).read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                raise PhotosUnavailable(f"{package} {path}: its sha256 is not the one listed; not kept")
            to_photo(data).save(out / name_of(path), quality=90)
            rows.append({"file": name_of(path), "label": label, "licence": licence,
                         "source": f"Debian package {package} {version}, /{inside}{path}", "sha256": sha})
    (out / "photos.json").write_text(json.dumps(rows, indent=1) + "\n")
    log(f"{len(rows)} photos in {out}")
    return out
