"""Evaluation report: accuracy, per-class precision/recall/F1 and the confusion matrix.

    python -m trainer.evaluate data/cnn-pretrained.npz --data ../shared/data/cifar10-jpeg

runs the saved model in-process on a split and writes report.txt and
confusion.png (with --out), printing the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from matrix.classifier import Classifier, classifier_class, load_params
from util import augment, data, models


def report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, confusion matrix (rows: true class, columns: predicted) and per-class scores."""
    K = len(classes)
    conf = np.zeros((K, K), dtype=np.int64)
    np.add.at(conf, (y_true, y_pred), 1)
    tp = np.diag(conf).astype(float)
    predicted, actual = conf.sum(axis=0), conf.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(K), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(K), where=actual > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(K), where=precision + recall > 0
    )
    return {
        "accuracy": float(tp.sum() / max(conf.sum(), 1)),
        "n": int(conf.sum()),
        "classes": list(classes),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": actual.tolist(),
        "confusion": conf.tolist(),
    }


def with_tta(rep: dict[str, Any], single_view_accuracy: float) -> dict[str, Any]:
    """`rep` of predictions made with test-time augmentation, marked as such and with the
    accuracy of plain (single-view) predictions for comparison."""
    return {**rep, "test_time_augmentation": True, "single_view_accuracy": single_view_accuracy}


def format_report(rep: dict[str, Any]) -> str:
    head = f"accuracy {rep['accuracy']:.2%} on {rep['n']} images"
    if rep.get("test_time_augmentation"):
        head += (
            f" with test-time augmentation ({augment.TEST_VIEWS} flipped and shifted views); "
            f"{rep['single_view_accuracy']:.2%} with one view"
        )
    lines = [head, ""]
    lines.append(f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for i, c in enumerate(rep["classes"]):
        lines.append(
            f"{c:<12}{rep['precision'][i]:>10.3f}{rep['recall'][i]:>10.3f}"
            f"{rep['f1'][i]:>10.3f}{rep['support'][i]:>10d}"
        )
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    width = max(6, *(len(str(v)) + 1 for row in rep["confusion"] for v in row))
    lines.append(" " * 12 + "".join(f"{c[: width - 1]:>{width}}" for c in rep["classes"]))
    for c, row in zip(rep["classes"], rep["confusion"], strict=True):
        lines.append(f"{c:<12}" + "".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)


def plot_confusion(rep: dict[str, Any], path: str | Path) -> None:
    """Writes the confusion matrix as a PNG heat map with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.array(rep["confusion"])
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(conf, cmap="Blues")
    ax.set_xticks(range(len(rep["classes"])), rep["classes"], rotation=45, ha="right")
    ax.set_yticks(range(len(rep["classes"])), rep["classes"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {rep['accuracy']:.2%} on {rep['n']} images")
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            color = "white" if conf[i, j] > conf.max() / 2 else "black"
            ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(rep: dict[str, Any], out: str | Path) -> str:
    """Writes report.txt, report.json and confusion.png into `out`; returns the text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = format_report(rep)
    (out / "report.txt").write_text(text + "\n")
    (out / "report.json").write_text(json.dumps(rep, indent=1))
    plot_confusion(rep, out / "confusion.png")
    return text


def load_model(path: str | Path) -> Classifier:
    """The classifier saved at `path`, whichever of the models it is."""
    _, meta = load_params(path)
    name = meta.get("model")
    if name not in models.MODELS:
        raise ValueError(f"{path}: unknown model {name!r}; expected one of {sorted(models.MODELS)}")
    return classifier_class(name).load(path)


def evaluate(
    model: Classifier, ds: data.Dataset, dtype: str = "float32", tta: bool = False
) -> dict[str, Any]:
    """Report of `model` on a uint8 dataset, normalised with the model's own statistics;
    tta: of predictions with test-time augmentation (`Classifier.predict`)."""
    if "normalizer" not in model.metadata:
        raise ValueError(f"{model.name}: the model carries no preprocessing statistics")
    norm = data.Normalizer.from_meta(model.metadata["normalizer"])
    X = norm.apply(ds.X, dtype)
    rep = report(ds.y, model.predict(X, tta), model.metadata.get("classes", ds.classes))
    if tta:
        rep = with_tta(rep, single_view_accuracy=float(np.mean(model.predict(X) == ds.y)))
    return rep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__)
    parser.add_argument("model", help="a model .npz written by training (Classifier.save)")
    parser.add_argument("--data", default="data/cifar10-sample", help="data set directory")
    parser.add_argument("--split", choices=["train", "test"], default="test", help="which split")
    parser.add_argument(
        "--val-split",
        type=int,
        default=0,
        metavar="N",
        help="evaluate on the N-image validation split held out of train (same seed as training)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    parser.add_argument("--out", help="directory for report.txt, report.json and confusion.png")
    parser.add_argument(
        "--tta",
        action="store_true",
        help="predict with test-time augmentation (averaged over "
        f"{augment.TEST_VIEWS} flipped and shifted views)",
    )
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
        ds = data.load(args.data, "train" if args.val_split else args.split)
        if args.val_split:
            _, ds = data.train_val_split(ds, args.val_split, seed=args.seed)
        rep = evaluate(model, ds, tta=args.tta)
    except (ValueError, FileNotFoundError) as e:
        print(f"python -m trainer.evaluate: error: {e}", file=sys.stderr)
        return 2
    print(write_report(rep, args.out) if args.out else format_report(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
