"""Command line: ``python -m app COMMAND``.

serve          start the web app (same as uvicorn app.main:app)
fetch-mnist    download and verify MNIST into the data directory
train-lenet    train the bundled LeNet reproducibly
fetch-weights  download torchvision ImageNet weights into torch's cache
"""

from __future__ import annotations

import argparse
import logging
import sys

from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m app", description="Fooling Lab")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start the web app")
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.port)

    p = sub.add_parser("fetch-mnist", help="download and verify MNIST")
    p.add_argument("--data-dir", default=str(settings.data_dir))

    p = sub.add_parser("train-lenet", help="train LeNet on MNIST (reproducible)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", default=str(settings.models_dir))
    p.add_argument("--model-id", default="lenet-mnist")
    p.add_argument("--data-dir", default=str(settings.data_dir))

    p = sub.add_parser("fetch-weights", help="download torchvision ImageNet weights")
    p.add_argument("models", nargs="*", help="model ids (default: all torchvision models)")

    p = sub.add_parser("fool", help="make fooling images with one method")
    p.add_argument("--model", default="lenet-mnist")
    p.add_argument("--method", default="map-elites",
                   choices=["evolve", "map-elites", "gradient", "fgsm", "pgd", "random"])
    p.add_argument("--encoding", default="direct", choices=["direct", "cppn"],
                   help="evolve, map-elites, gradient: direct (pixels) or cppn")
    p.add_argument("--targets", default=None,
                   help="all, or comma-separated class indices or names (adversarial: omit for untargeted)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/latest")
    p.add_argument("--image", help="the real image to perturb (fgsm, pgd) or start from (gradient)")
    p.add_argument("--generations", type=int, help="evolutionary methods")
    p.add_argument("--steps", type=int, help="gradient and pgd")
    p.add_argument("--population", type=int, help="offspring per generation")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="any method parameter, e.g. --param epsilon=0.1 --param halve_every=1000")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop after this many seconds (default: 600 for ImageNet evolution on a CPU, else none)")
    p.add_argument("--history-every", type=float, default=1.0, metavar="SECONDS",
                   help="how often to record the confidence curve (summary.json history, curve.png)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("experiment", help="run an experiment: defences, transfer, explainers")
    p.add_argument("name", help="retrain, transfer, ensemble, smoothing, volume, logistic, neurons, blackbox")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/experiment")
    p.add_argument("--quick", action="store_true", help="small settings: about a minute on a CPU")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "serve":
        import uvicorn

        uvicorn.run("app.main:app", host=args.host, port=args.port, timeout_graceful_shutdown=5)
    elif args.command == "fetch-mnist":
        from pathlib import Path

        from app.data import mnist

        try:
            print(mnist.fetch(Path(args.data_dir)))
        except mnist.DataUnavailable as exc:
            print(exc, file=sys.stderr)
            return 2
    elif args.command == "train-lenet":
        from pathlib import Path

        from app.models.train_lenet import train

        meta = train(Path(args.data_dir), Path(args.out), seed=args.seed, epochs=args.epochs,
                     model_id=args.model_id)
        print(f"test accuracy {meta['test_accuracy']:.4%}, {meta['seconds']} s -> {args.out}")
    elif args.command == "fool":
        from app.cli.fool import run
        from app.fooling.methods import MethodError

        try:
            return run(args)
        except (MethodError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    elif args.command == "experiment":
        from app.experiments import catalog

        try:
            result = catalog.run(args.name, args.seed, args.out, args.quick)
        except (ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.name}: {result['seconds']} s -> {args.out}/results.json, plots: {', '.join(result['plots'])}")
    elif args.command == "fetch-weights":
        from app.models import builtin
        from app.models.entry import ModelEntry

        ids = args.models or list(builtin.TORCHVISION)
        failed = 0
        for model_id in ids:
            if model_id not in builtin.TORCHVISION:
                print(f"{model_id}: not a torchvision model ({', '.join(builtin.TORCHVISION)})", file=sys.stderr)
                failed += 1
                continue
            entry: ModelEntry = builtin.torchvision_entry(model_id)
            try:
                builtin.download_torchvision_weights(entry)
                print(f"{model_id}: {builtin.cached_weights_path(model_id)}")
            except Exception as exc:
                print(f"{model_id}: {builtin.unavailable_reason(entry, exc)}", file=sys.stderr)
                failed += 1
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
