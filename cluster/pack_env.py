"""Packs a relocatable Python environment for Spark executors that do not share the repo.

    python -m cluster.pack_env --out build/sparknet-env.tar.gz

Steps (each prints a progress line):

1. build a wheel of this project with `pip wheel <copy> --no-deps`, which
   compiles the Cython kernels; the copy holds only the sources (no in-place
   `.so`, no `build/`), so the wheel never picks up a stale extension and the
   build never races with an editable install in the repo;
2. create a fresh venv in build/ (venv-pack refuses editable installs, so
   the project's own .venv cannot be packed);
3. install the wheel (--no-deps) and what the executors import: numpy, threadpoolctl, Pillow,
   pinned to the driver's version. pyspark and py4j are left out on purpose:
   executors import them from the Spark installation on the workers
   ($SPARK_HOME/python/lib/pyspark.zip and py4j-*.zip, put on PYTHONPATH by
   Spark), which matches the workers' JVM; tqdm and matplotlib are only needed
   on the driver (progress, plots), Pillow on executors that decode images;
   then import what executors import (EXECUTOR_IMPORTS) with the env alone;
4. `venv-pack` the venv into --out.

The archive is rebuilt only when a source file is newer than it, when the
pinned versions changed (`--numpy`, or the driver's), or with --force.
venv-pack keeps `bin/python` as a link to this machine's base interpreter, so
the workers need Python at the same path (see docs/cluster.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import time
import venv

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "build" / "sparknet-env.tar.gz"
TOP_FILES = ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in")
SOURCE_SUFFIXES = (".py", ".pyx", ".pxd")
# what the executors import besides this project (pinned to the driver's versions)
EXECUTOR_REQUIREMENTS = ("numpy", "threadpoolctl", "pillow")
# what executors import of the project (the layers, the trainer's tasks and its start-up
# check): the packed env must import them alone, without tqdm, matplotlib or pyspark (which
# executors take from their Spark)
EXECUTOR_IMPORTS = (
    "util._kernels", "util.layer", "matrix.nn", "trainer.distributed", "trainer.executors",
    "trainer.sources", "numpy",
)  # fmt: skip


class PackError(RuntimeError):
    """A step of packing failed; the message names the step and shows its output."""


def packages(repo: Path = REPO) -> list[str]:
    """The top-level packages that pyproject.toml installs (and executors import)."""
    with open(repo / "pyproject.toml", "rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    return list(dict.fromkeys(name.split(".")[0] for name in include))


def sources(repo: Path = REPO) -> list[Path]:
    """The files the packed env is built from (their mtimes decide about a rebuild)."""
    files = [repo / f for f in TOP_FILES if (repo / f).exists()]
    for pkg in packages(repo):
        files += [p for p in (repo / pkg).rglob("*") if p.suffix in SOURCE_SUFFIXES]
    return [f for f in files if "__pycache__" not in f.parts]


def up_to_date(out: Path, inputs: Iterable[Path]) -> bool:
    """True when `out` exists and is newer than every input."""
    if not out.exists():
        return False
    built = out.stat().st_mtime
    return all(p.stat().st_mtime < built for p in inputs)


def progress(msg: str) -> None:
    print(f"pack_env: {msg}", flush=True)


def run(step: str, cmd: list[str], **kwargs) -> None:
    """Runs one step; PackError with the output's tail when it fails."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-40:])
        raise PackError(f"{step} failed (exit {out.returncode}): {' '.join(cmd)}\n{tail}")
    progress(f"{step} done in {time.perf_counter() - t0:.0f} s")


def copy_sources(repo: Path, dest: Path) -> None:
    """The sources only: no built extension, no generated C, no caches, no build/."""
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.c", "*.egg-info")
    for f in TOP_FILES:
        if (repo / f).exists():
            shutil.copy2(repo / f, dest / f)
    for pkg in packages(repo):
        shutil.copytree(repo / pkg, dest / pkg, ignore=ignore)


def pinned(names: Iterable[str], versions: dict[str, str] | None = None) -> list[str]:
    """`name==version` as installed here, so driver and executors unpickle the same arrays;
    `versions` overrides some (name -> version)."""
    reqs = []
    for name in names:
        try:
            version = (versions or {}).get(name) or importlib.metadata.version(name)
            reqs.append(f"{name}=={version}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(name)
    return reqs


def pack(
    out: Path = DEFAULT_OUT,
    force: bool = False,
    repo: Path = REPO,
    versions: dict[str, str] | None = None,
) -> Path:
    """Builds `out` (a venv-pack tar.gz with the project and numpy); returns its path.

    versions: package -> version to pack instead of the driver's (e.g. {"numpy": "2.3.5"}:
    an environment the trainer's start-up check must refuse)."""
    out = out.resolve()
    reqs = pinned(EXECUTOR_REQUIREMENTS, versions)
    stamp = out.with_name(out.name + ".requirements")  # what the archive holds besides us
    same_reqs = stamp.exists() and stamp.read_text().split() == reqs
    if not force and same_reqs and up_to_date(out, sources(repo)):
        progress(f"{out} is newer than the sources, nothing to do (--force rebuilds)")
        return out
    venv_pack = shutil.which("venv-pack", path=str(Path(sys.executable).parent))
    if venv_pack is None:
        raise PackError(
            "venv-pack is not installed next to this Python; run `pip install venv-pack` "
            "(it is in the project's [test] extra)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    env_dir = out.parent / (out.name.split(".")[0] + "-venv")
    pip = [sys.executable, "-m", "pip", "--no-input"]
    with tempfile.TemporaryDirectory(prefix="sparknet-pack-") as tmp:
        src, wheels = Path(tmp) / "src", Path(tmp) / "wheels"
        src.mkdir()
        copy_sources(repo, src)
        progress("building the project wheel (compiles the Cython kernels)")
        run("wheel", [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(src)])
        (wheel,) = wheels.glob("sparknet-*.whl")

        progress(f"creating a fresh venv in {env_dir}")
        shutil.rmtree(env_dir, ignore_errors=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        env_python = str(env_dir / "bin" / "python")
        progress(f"installing {wheel.name} and {' '.join(reqs)}")
        run("install", [env_python, "-m", "pip", "--no-input", "install", "--no-deps",
                        str(wheel)])  # fmt: skip
        run("install", [env_python, "-m", "pip", "--no-input", "install", *reqs])
        # executors must not need anything but the packed files: import what they import
        run(
            "import check",
            [env_python, "-I", "-c", f"import {', '.join(EXECUTOR_IMPORTS)}"],
            cwd=tmp,
        )

    progress(f"packing {env_dir} into {out}")
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    run(
        "venv-pack",
        [venv_pack, "--prefix", str(env_dir), "--output", str(partial), "--format", "tar.gz"],
    )
    partial.replace(out)  # never leave a half-written archive that looks up to date
    stamp.write_text("\n".join(reqs) + "\n")
    progress(f"{out} ({out.stat().st_size / 2**20:.0f} MiB)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.pack_env",
        description="Pack the project, its Cython kernels and numpy into a venv-pack archive "
        "for spark-submit --archives <out>#env.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the archive to write")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if the archive is newer than the sources"
    )
    parser.add_argument(
        "--numpy",
        metavar="VERSION",
        help="pack this numpy instead of the driver's (default: the driver's; the trainer "
        "refuses executors whose numpy differs from the driver's)",
    )
    args = parser.parse_args(argv)
    try:
        pack(args.out, args.force, versions={"numpy": args.numpy} if args.numpy else None)
    except PackError as e:
        print(f"python -m cluster.pack_env: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
