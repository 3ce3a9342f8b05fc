"""The paper's n+1 experiment: evolve fooling images against LeNet, add them to the training set as
an eleventh class ("fooling"), retrain, and evolve again against the new network. Per iteration:
test accuracy, how many evolved images reach 99% and 99.99% on a digit, and their median
confidence. (The paper found that on MNIST evolution still wins.)"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from app.data import mnist
from app.experiments.common import Context, plot
from app.fooling.base import SUCCESS, last, model_score_fn
from app.fooling.direct import DirectEncoding
from app.fooling.evolution import EvolutionParams, map_elites
from app.models.classifier import Classifier
from app.models.lenet import LeNet
from app.models.train_lenet import random_shift

FOOLING = 10  # the extra class
CL = torch.channels_last


def grow(net10: torch.nn.Module) -> LeNet:
    """LeNet with 11 outputs, starting from the trained 10-class weights (the new row starts at zero)."""
    net = LeNet(num_classes=11)
    state = {k: v.clone() for k, v in net10.state_dict().items()}
    w, b = state["classifier.3.weight"], state["classifier.3.bias"]
    state["classifier.3.weight"] = torch.cat([w, torch.zeros(1, w.shape[1])])
    state["classifier.3.bias"] = torch.cat([b, torch.full((1,), float(b.min()))])
    net.load_state_dict(state)
    return net.to(memory_format=CL)  # as the app's models: about twice the conv throughput on a CPU


def evolve_many(net: torch.nn.Module, runs: int, generations: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Elites of several MAP-Elites runs over the ten digits: (images, their confidence)."""
    score = model_score_fn(Classifier(net, (0.0,), (1.0,), channels_last=True).eval())
    images, conf = [], []
    for r in range(runs):
        snap = last(map_elites(score, DirectEncoding((1, 28, 28), "cpu"), list(range(10)), 11,
                               EvolutionParams(population=100, generations=generations, seed=seed * 1000 + r)))
        images.append(snap.images)
        conf.append(snap.confidence)
    return torch.cat(images), torch.cat(conf)


def train(net: LeNet, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, lr: float = 0.01) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - 127, 128):
            idx = order[i:i + 128]
            loss = F.cross_entropy(net(random_shift(x[idx], gen).contiguous(memory_format=CL)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()


@torch.inference_mode()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.cat([net(x[i:i + 2000].contiguous(memory_format=CL)).argmax(1)
                            for i in range(0, len(x), 2000)]).eq(y).float().mean())


def run(ctx: Context) -> dict:
    torch.manual_seed(ctx.seed)
    iterations, runs, gens, epochs = (1, 2, 150, 1) if ctx.quick else (3, 5, 1000, 1)
    x_train, y_train = mnist.load(ctx.settings.data_dir, train=True)
    x_test, y_test = mnist.load(ctx.settings.data_dir, train=False)
    if ctx.quick:
        x_train, y_train = x_train[:6000], y_train[:6000]
    base = ctx.model("lenet-mnist").net  # the bundled, trained LeNet inside its Classifier wrapper
    net = grow(base).eval()
    pool_x, rows, networks = [], [], []
    per_class = len(x_train) // 10  # the fooling class gets as many examples as a digit class
    for it in range(iterations + 1):
        t0 = time.perf_counter()
        images, conf = evolve_many(net, runs, gens, ctx.seed + it)
        row = {"iteration": it, "test_accuracy": accuracy(net, x_test, y_test), "evolved": len(images),
               "at_99": int((conf >= 0.99).sum()), "at_9999": int((conf >= SUCCESS).sum()),
               "median_confidence": float(conf.median()), "evolve_seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        ctx.log(f"iteration {it}: accuracy {row['test_accuracy']:.4f}, {row['at_9999']}/{len(images)} at 99.99%, "
                f"median {row['median_confidence']:.4f}")
        if it == iterations:
            break
        pool_x.append(images)
        fooling = torch.cat(pool_x)
        reps = fooling[torch.randint(len(fooling), (per_class,), generator=torch.Generator().manual_seed(it))]
        x = torch.cat([x_train, reps])
        y = torch.cat([y_train, torch.full((len(reps),), FOOLING, dtype=torch.long)])
        t0 = time.perf_counter()
        train(net, x, y, epochs, ctx.seed + it)
        row["retrain_seconds"] = round(time.perf_counter() - t0, 1)
        # the n+1 network after this round, as a defended model can use it (lenet-mnist+retrained(n1))
        saved = ctx.out / f"lenet-mnist-retrained-n{it + 1}.pt"
        torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, saved)
        networks.append(saved.name)
    its = [r["iteration"] for r in rows]
    plot(ctx.out / "retrain.png", "Retraining with a fooling class (MNIST LeNet)", "iteration", "share / accuracy",
         {"test accuracy": (its, [r["test_accuracy"] for r in rows]),
          "evolved images at 99.99%": (its, [r["at_9999"] / r["evolved"] for r in rows]),
          "median confidence of evolved images": (its, [r["median_confidence"] for r in rows])})
    return {"iterations": iterations, "runs_per_iteration": runs, "generations": gens, "epochs_per_retrain": epochs,
            "training_images": len(x_train), "rows": rows, "plots": ["retrain.png"], "networks": networks}
