"""Command line shared by `python -m matrix` and `python -m spark`.

Both load the same data the same way, build the same model and print one
line per iteration; the Spark command adds its session options.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matrix.classifier import Classifier, IterationReport, classifier_class, load_params
from util import data, kernels, models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options common to the matrix and Spark commands."""
    parser.add_argument("model", choices=sorted(models.MODELS), help="which classifier to train")
    parser.add_argument(
        "--data",
        default=str(data.SAMPLE),
        help="CIFAR-10 python batches directory or image-folder tree with train/ and test/ "
        "(default: the sample shipped in data/)",
    )
    parser.add_argument(
        "--val-split",
        type=int,
        default=0,
        metavar="N",
        help="validate on N images held out of the training split instead of the test split",
    )
    parser.add_argument("--iters", type=int, help="training iterations (default: per model)")
    parser.add_argument(
        "--batch", type=int, help="images per iteration (default: per model; 0 = all)"
    )
    parser.add_argument(
        "--dtype", choices=["float32", "float64"], default="float32", help="floating-point type"
    )
    parser.add_argument("--lr", type=float, help="learning rate (default: per model)")
    parser.add_argument("--momentum", type=float, help="momentum (default: per model)")
    parser.add_argument("--weight-decay", type=float, help="L2 strength (default: per model)")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialisation and batches")
    parser.add_argument("--save", metavar="PATH", help="write the trained model to this .npz")
    parser.add_argument(
        "--model-file",
        metavar="PATH",
        help="validate the parameters in this .npz (written by --save or trainer.train) "
        "instead of training (default for cnn: the shipped data/cnn-pretrained.npz)",
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="train from random initialisation even where a pre-trained model is shipped",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print per-layer forward/backward times"
    )


@dataclass
class Prepared:
    """Preprocessed training and validation arrays and the statistics used."""

    X: np.ndarray  # (N, 3, 32, 32) float
    y: np.ndarray  # (N,) int64
    X_val: np.ndarray
    y_val: np.ndarray
    normalizer: data.Normalizer
    classes: list[str]


def pretrained_file(args: argparse.Namespace) -> Path | None:
    """The model file to validate instead of training, or None to train."""
    if args.model_file and args.from_scratch:
        raise ValueError("--model-file and --from-scratch exclude each other")
    if args.model_file:
        return Path(args.model_file)
    shipped = models.get(args.model).pretrained_path
    if args.from_scratch or shipped is None:
        return None
    if not shipped.is_file():
        logging.getLogger(__name__).warning("%s is missing: training from scratch", shipped)
        return None
    return shipped


def prepare_data(args: argparse.Namespace, norm: data.Normalizer | None = None) -> Prepared:
    """Loads the data named by --data and preprocesses it with `norm` (a loaded model's
    statistics) or, by default, with statistics of the training split."""
    train = data.load(args.data, "train")
    if args.val_split:
        train, val = data.train_val_split(train, args.val_split, seed=args.seed)
    else:
        val = data.load(args.data, "test")
    norm = norm or data.Normalizer.fit(train.X)
    return Prepared(
        norm.apply(train.X, args.dtype),
        train.y,
        norm.apply(val.X, args.dtype),
        val.y,
        norm,
        train.classes,
    )


def make_model(
    args: argparse.Namespace, prepared: Prepared, cls: type[Classifier] | None = None, **kw
) -> Classifier:
    """The model class for args.model (or `cls`), with command-line hyperparameter overrides."""
    cls = cls or classifier_class(args.model)
    sgd = cls.defaults.override(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    model = cls(
        num_classes=len(prepared.classes),
        dtype=args.dtype,
        seed=args.seed,
        sgd=sgd,
        verbose=args.verbose,
        **kw,
    )
    model.metadata = {"normalizer": prepared.normalizer.to_meta(), "classes": prepared.classes}
    return model


def validate_saved(args: argparse.Namespace, model: Classifier, prepared: Prepared, path) -> float:
    """Loads `path` into the model and reports its validation accuracy (no training)."""
    meta = model.adopt(path, prepared.classes)
    model.metadata = {k: v for k, v in meta.items() if k not in ("model", "num_classes")}
    t0 = time.perf_counter()
    data = model.prepare(prepared.X_val, prepared.y_val)
    try:
        acc, acc_tta = (model.accuracy_on(data, tta) for tta in (False, True))
    finally:
        model.release(data)
    print(
        f"{model.name}: parameters from {path} ({args.dtype}); validation accuracy {acc:.2%} on "
        f"{len(prepared.y_val)} images, {acc_tta:.2%} with test-time augmentation "
        f"({time.perf_counter() - t0:.1f}s). --from-scratch trains instead.",
        flush=True,
    )
    return acc


def run(args: argparse.Namespace, model: Classifier, prepared: Prepared) -> float:
    """Validates a saved model (--model-file, or the shipped pre-trained one), or trains with
    one line of output per iteration; returns the final validation accuracy."""
    if args.pretrained:
        return validate_saved(args, model, prepared, args.pretrained)
    spec = models.get(args.model)
    iters, batch = spec.iters, spec.batch
    iters = args.iters if args.iters is not None else iters
    batch = (args.batch or None) if args.batch is not None else batch
    print(
        f"{model.name}: {len(prepared.y)} training / {len(prepared.y_val)} validation images, "
        f"{iters} iterations, batch {batch or 'all'}, {args.dtype}, lr {model.sgd.lr}, "
        f"momentum {model.sgd.momentum}, weight decay {model.sgd.weight_decay}",
        flush=True,
    )

    def report(r: IterationReport) -> None:
        print(r.line(), flush=True)
        if args.verbose:
            print(format_layer_times(r.layer_seconds), flush=True)

    t0 = time.perf_counter()
    history = model.train(
        prepared.X,
        prepared.y,
        iters,
        batch_size=batch,
        seed=args.seed,
        X_val=prepared.X_val,
        y_val=prepared.y_val,
        on_iteration=report,
    )
    acc = history[-1].val_accuracy if history else model.validate(prepared.X_val, prepared.y_val)
    print(f"final validation accuracy {acc:.2%}  ({time.perf_counter() - t0:.1f}s)")
    if args.save:
        model.save(args.save)
        print(f"saved {args.save}")
    return acc


def format_layer_times(seconds: dict[str, float]) -> str:
    """Indented 'layer pass  ms' lines, in the order the layers ran."""
    return "\n".join(f"    {name:<22} {1e3 * s:9.2f} ms" for name, s in seconds.items())


def main_with(
    argv: list[str] | None,
    prog: str,
    extend: Callable[[argparse.ArgumentParser], None] | None,
    body: Callable[[argparse.Namespace, Prepared], float],
) -> int:
    """Parses arguments, loads data, runs `body`; user errors become one-line messages."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    add_arguments(parser)
    if extend:
        extend(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    kernels.keep_freed_memory()
    try:
        args.pretrained = pretrained_file(args)
        norm = None
        if args.pretrained:
            meta = load_params(args.pretrained)[1]
            if "normalizer" not in meta:
                raise ValueError(f"{args.pretrained}: holds no preprocessing statistics")
            norm = data.Normalizer.from_meta(meta["normalizer"])
        body(args, prepare_data(args, norm))
    except (data.DataError, ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0
