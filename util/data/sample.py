"""Draws the shipped CIFAR-10 sample from the full image-folder copy of the data set.

    python -m util.data.sample            # from the repository root, with the defaults

For each split and class (class folders in name order), `--train-per-class` /
`--test-per-class` file names are drawn without replacement from that
folder's sorted listing with a generator seeded by `--seed`, and the JPEG
files are copied byte for byte into OUT/<split>/<class>/ under their
original names. Same source and seed, same sample.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

from util.data.folders import IMAGE_SUFFIXES

log = logging.getLogger("make_sample")


def draw(files: list[str], k: int, rng: np.random.Generator) -> list[str]:
    """k names drawn without replacement from `files` (sorted first), returned sorted."""
    files = sorted(files)
    if k > len(files):
        raise ValueError(f"asked for {k} images, only {len(files)} available")
    return sorted(files[i] for i in rng.choice(len(files), size=k, replace=False))


def make_sample(source: Path, out: Path, per_class: dict[str, int], seed: int) -> int:
    """Copies the drawn files; returns how many. per_class maps split -> images per class."""
    total = 0
    for split, k in per_class.items():
        rng = np.random.default_rng(seed)  # one generator per split, classes in name order
        src_split = source / split
        classes = sorted(p.name for p in src_split.iterdir() if p.is_dir())
        if not classes:
            raise SystemExit(f"make_sample: {src_split}: no class folders")
        for cls in classes:
            names = [
                p.name
                for p in (src_split / cls).iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ]
            try:
                chosen = draw(names, k, rng)
            except ValueError as e:
                raise SystemExit(f"make_sample: {src_split / cls}: {e}") from e
            dest = out / split / cls
            dest.mkdir(parents=True, exist_ok=True)
            for name in chosen:
                shutil.copyfile(src_split / cls / name, dest / name)  # bytes only, no metadata
            total += len(chosen)
            log.info("%s/%s: %d images", split, cls, len(chosen))
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--source",
        type=Path,
        default=Path("../shared/data/cifar10-jpeg"),
        help="image-folder copy of CIFAR-10 with train/<class>/ and test/<class>/ "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--out", type=Path, default=Path("data/cifar10-sample"), help="output folder (%(default)s)"
    )
    ap.add_argument("--train-per-class", type=int, default=200, help="train images per class")
    ap.add_argument("--test-per-class", type=int, default=50, help="test images per class")
    ap.add_argument("--seed", type=int, default=0, help="seed of the draw (%(default)s)")
    ap.add_argument(
        "--force", action="store_true", help="replace OUT/train and OUT/test if they exist"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    for split in ("train", "test"):
        if not (args.source / split).is_dir():
            ap.error(f"{args.source / split}: not found (expected the CIFAR-10 JPEG tree)")
    existing = [args.out / s for s in ("train", "test") if (args.out / s).exists()]
    if existing and not args.force:
        ap.error(f"{', '.join(map(str, existing))} already exist; pass --force to replace")
    for path in existing:
        shutil.rmtree(path)
    n = make_sample(
        args.source,
        args.out,
        {"train": args.train_per_class, "test": args.test_per_class},
        args.seed,
    )
    log.info("wrote %d images to %s", n, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
