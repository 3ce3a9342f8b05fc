"""How much of image space fools the network: around a fooling image and around a real test
image, random perturbations of growing size, and the share that keeps the same label with at
least 99% confidence."""

from __future__ import annotations

import torch

from app.data import mnist
from app.experiments.common import Context, evolve_fooling, plot


@torch.inference_mode()
def kept_share(model, images: torch.Tensor, labels: torch.Tensor, radius: float, samples: int,
               gen: torch.Generator) -> list[float]:
    """Per image: the share of uniform L-inf perturbations of ``radius`` that keep ``labels`` at >= 99%."""
    out = []
    for img, lab in zip(images, labels, strict=True):
        noise = (torch.rand((samples, *img.shape), generator=gen) * 2 - 1) * radius
        probs = torch.softmax(model((img + noise).clamp(0, 1)), -1)
        out.append(float(((probs.argmax(1) == lab) & (probs.max(1).values >= 0.99)).float().mean()))
    return out


def run(ctx: Context) -> dict:
    model = ctx.model("lenet-mnist")
    gen = torch.Generator().manual_seed(ctx.seed)
    n_img, samples = (3, 200) if ctx.quick else (10, 1000)
    targets = list(range(n_img))
    ctx.log("evolving fooling images")
    fooling, evo = evolve_fooling(model, targets, ctx.seed, 300 if ctx.quick else 3000)
    x, y = mnist.load(ctx.settings.data_dir, train=False)
    with torch.inference_mode():
        p = torch.softmax(model(x[:500]), -1)
    ok = ((p.argmax(1) == y[:500]) & (p.max(1).values >= 0.99)).nonzero().squeeze(1)[:n_img]
    real, real_labels = x[ok], y[ok]
    radii = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]
    rows = []
    for r in radii:
        f = kept_share(model, fooling, torch.tensor(targets), r, samples, gen)
        rr = kept_share(model, real, real_labels, r, samples, gen)
        rows.append({"radius": r, "fooling": sum(f) / len(f), "real": sum(rr) / len(rr),
                     "fooling_each": f, "real_each": rr})
        ctx.log(f"radius {r}: fooling {rows[-1]['fooling']:.2f}, real {rows[-1]['real']:.2f}")
    plot(ctx.out / "volume.png", "Share of random perturbations keeping the label at >= 99%",
         "L-inf radius of uniform noise", "share kept",
         {"around fooling images": (radii, [r["fooling"] for r in rows]),
          "around real test digits": (radii, [r["real"] for r in rows])}, logx=True)
    return {"images": n_img, "samples_per_radius": samples, "fooling_evolution": evo, "rows": rows,
            "plots": ["volume.png"]}
