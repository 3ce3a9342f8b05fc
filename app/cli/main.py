"""The command line: ``fooling-lab COMMAND`` (or ``python -m app COMMAND``, the same thing).

serve          start the web app (same as uvicorn app.main:app)
fetch-mnist    download and verify MNIST into the data directory
fetch-photos   download and verify the control photos (Debian packages) into the data directory
fetch-weights  download torchvision ImageNet weights into torch's cache
train-lenet    train the bundled LeNet reproducibly
fool           make fooling images with one method
experiment     run an experiment: defences, transfer, explainers

Conventions: results go to stdout (one JSON document with --json), progress and messages to
stderr; progress bars only on a terminal and never with --quiet; exit 0 on success, 1 when some of
the work failed, 2 for bad input or an unavailable model or data set.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.fooling.info import ENCODINGS, METHODS
from app.settings import Settings


def _output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or messages on stderr")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON document on stdout")


def build_parser(prog: str = "fooling-lab") -> argparse.ArgumentParser:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog=prog, description="Fooling Lab: watch deep neural networks get fooled.",
                                     epilog="Settings: FOOLING_* environment variables (see docs/settings.md).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="start the web app")
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.port)

    p = sub.add_parser("fetch-mnist", help="download and verify MNIST")
    p.add_argument("--data-dir", default=str(settings.data_dir))
    _output_flags(p)

    p = sub.add_parser("fetch-photos", help="download and verify the real control photos (Debian packages)")
    p.add_argument("--data-dir", default=str(settings.data_dir))
    _output_flags(p)

    p = sub.add_parser("fetch-weights", help="download torchvision ImageNet weights")
    p.add_argument("models", nargs="*", help="model ids (default: all torchvision models)")
    _output_flags(p)

    p = sub.add_parser("train-lenet", help="train LeNet on MNIST (reproducible)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", default=str(settings.models_dir))
    p.add_argument("--model-id", default="lenet-mnist")
    p.add_argument("--mean-image", action="store_true",
                   help="subtract the training set's mean image, as the paper's Caffe LeNet (lenet-mnist-mean)")
    p.add_argument("--data-dir", default=str(settings.data_dir))
    _output_flags(p)

    p = sub.add_parser("fool", help="make fooling images with one method")
    p.add_argument("--model", default="lenet-mnist")
    p.add_argument("--method", default="map-elites", choices=METHODS)
    p.add_argument("--encoding", default="direct", choices=ENCODINGS,
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
    _output_flags(p)

    p = sub.add_parser("experiment", help="run an experiment: defences, transfer, explainers")
    p.add_argument("name", help="retrain, transfer, ensemble, smoothing, volume, logistic, neurons, blackbox")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/experiment")
    p.add_argument("--quick", action="store_true", help="small settings: about a minute on a CPU")
    _output_flags(p)
    return parser


def _emit(args: argparse.Namespace, document: object, line: str) -> None:
    """The command's result: JSON with --json, else a line for a person."""
    print(json.dumps(document, indent=2) if args.json else line)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None, prog: str = "fooling-lab") -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return COMMANDS[args.command](args)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run("app.main:app", host=args.host, port=args.port, timeout_graceful_shutdown=5)
    return 0


def _fetch_photos(args: argparse.Namespace) -> int:
    from app.data import photos

    try:
        path = photos.fetch(Path(args.data_dir), log=(lambda m: None) if args.quiet else
                            (lambda m: print(m, file=sys.stderr)))
    except photos.PhotosUnavailable as exc:
        return _error(str(exc))
    _emit(args, {"path": str(path), "photos": len(photos.PHOTOS)}, str(path))
    return 0


def _fetch_mnist(args: argparse.Namespace) -> int:
    from app.data import mnist

    try:
        path = mnist.fetch(Path(args.data_dir))
    except mnist.DataUnavailable as exc:
        return _error(str(exc))
    _emit(args, {"path": str(path)}, str(path))
    return 0


def _fetch_weights(args: argparse.Namespace) -> int:
    from app.models import builtin

    ids = args.models or list(builtin.TORCHVISION)
    report = {}
    for model_id in ids:
        if model_id not in builtin.TORCHVISION:
            report[model_id] = {"ok": False, "error": f"not a torchvision model ({', '.join(builtin.TORCHVISION)})"}
            continue
        entry = builtin.torchvision_entry(model_id)
        try:
            builtin.download_torchvision_weights(entry)
            report[model_id] = {"ok": True, "path": str(builtin.cached_weights_path(model_id))}
        except Exception as exc:  # no internet, a broken file: say which and why, go on with the rest
            report[model_id] = {"ok": False, "error": builtin.unavailable_reason(entry, exc)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for model_id, r in report.items():
            print(f"{model_id}: {r['path']}" if r["ok"] else f"{model_id}: {r['error']}",
                  file=sys.stdout if r["ok"] else sys.stderr)
    return 0 if all(r["ok"] for r in report.values()) else 1


def _train_lenet(args: argparse.Namespace) -> int:
    from app.models.train_lenet import train

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr)

    meta = train(Path(args.data_dir), Path(args.out), seed=args.seed, epochs=args.epochs,
                 model_id=args.model_id, log=log, mean_image=args.mean_image)
    _emit(args, meta, f"test accuracy {meta['test_accuracy']:.4%}, {meta['seconds']} s -> {args.out}")
    return 0


def _fool(args: argparse.Namespace) -> int:
    from app.cli import fool
    from app.fooling.methods import MethodError

    try:
        summary = fool.run(args)
    except (fool.Unavailable, MethodError, ValueError, OSError) as exc:
        return _error(str(exc))
    _emit(args, summary, fool.describe(summary, args.out))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from app.experiments import catalog

    try:
        result = catalog.run(args.name, args.seed, args.out, args.quick)
    except (ValueError, RuntimeError) as exc:
        return _error(str(exc))
    _emit(args, result, f"{args.name}: {result['seconds']} s -> {args.out}/results.json, "
                        f"plots: {', '.join(result['plots'])}")
    return 0


COMMANDS = {"serve": _serve, "fetch-mnist": _fetch_mnist, "fetch-photos": _fetch_photos,
            "fetch-weights": _fetch_weights,
            "train-lenet": _train_lenet, "fool": _fool, "experiment": _experiment}


def run() -> None:
    """The ``fooling-lab`` console script."""
    sys.exit(main())
