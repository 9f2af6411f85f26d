"""Run mypy (strict) over the installed layout: `python tests/typecheck.py [mypy args]`.

The parts are installed as `affidavit.<part>` from top-level folders (setuptools package-dir),
a mapping mypy cannot follow. So this lays out a scratch tree of links exactly as the package
installs (affidavit/__init__.py, affidavit/merkle -> merkle, ...) beside links to the tests and
benchmarks, and checks it all. Errors name the repository's own files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Rebuilt on every run; a fixed place, so that mypy's cache stays valid between runs.
TREE = ROOT / "build" / "typecheck"


def package_dirs() -> dict[str, Path]:
    """pyproject's package-dir table: installed package name -> source folder."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def lay_out(tree: Path) -> None:
    """Lay out under tree, as links, every package as it installs, and the tests, benchmarks
    and examples."""
    shutil.rmtree(tree, ignore_errors=True)
    top = tree / "affidavit"
    top.mkdir(parents=True)
    for name, folder in package_dirs().items():
        if name == "affidavit":
            for item in folder.iterdir():
                (top / item.name).symlink_to(item)
        else:
            (top / name.split(".", 1)[1]).symlink_to(folder, target_is_directory=True)
    for other in ("tests", "benchmarks", "examples"):
        (tree / other).symlink_to(ROOT / other, target_is_directory=True)


def run(extra: list[str]) -> subprocess.CompletedProcess[str]:
    """mypy over the laid-out tree; its cache stays in the repository's .mypy_cache."""
    lay_out(TREE)
    mypy = Path(sys.executable).parent / "mypy"
    result = subprocess.run(
        [
            str(mypy),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "affidavit",
            "tests",
            "benchmarks",
            "examples",
            *extra,
        ],
        cwd=TREE,
        capture_output=True,
        text=True,
        timeout=900,
    )
    # Name the repository's files, not the links.
    for name, folder in package_dirs().items():
        if name != "affidavit":
            link = name.replace(".", "/") + "/"
            result.stdout = result.stdout.replace(link, os.path.relpath(folder, ROOT) + "/")
    return result


if __name__ == "__main__":
    done = run(sys.argv[1:])
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    raise SystemExit(done.returncode)
