"""An older affidavit's `affidavit serve`, run for real: the code of a commit of this repository.

    tree = older_tree(tmp, "cc86bae")       # the commit's files, laid out as they install
    OlderServer(tree, data_dir, *args)      # a ServerProcess running that code

The commit's files come from `git archive`; they are laid out as the package installs (as
tests/typecheck.py does for this tree: affidavit/server -> server, ...) and run by this
interpreter, with this environment's libraries, in pure Python (AFFIDAVIT_PURE_PYTHON=1 and
no compiled cores in the tree: the Python beside each core gives identical answers). That
holds while the commit's dependencies are this tree's (pyproject.toml's, unchanged since
cc86bae). It costs a `git archive`, well under a second, where a venv of the commit would
build its C cores for minutes. A tree without the commit in its history (no .git, or a
shallow clone) cannot run it: the caller skips there, naming why, and fails in a full clone.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
from io import BytesIO
from pathlib import Path

from tests.serverproc import ROOT, ServerProcess


def older_tree(where: Path, commit: str) -> Path | None:
    """The files of commit laid out under where as the package installs (where/affidavit/…);
    None when this checkout's git history does not hold the commit."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return None
    source = where / "source"
    source.mkdir(parents=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(source, filter="data")
    config = tomllib.loads((source / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    top = where / "tree" / "affidavit"
    top.mkdir(parents=True)
    for name, folder in mapping.items():
        if name == "affidavit":
            for item in (source / folder).iterdir():
                (top / item.name).symlink_to(item)
        else:
            (top / name.split(".", 1)[1]).symlink_to(source / folder, target_is_directory=True)
    return where / "tree"


class OlderServer(ServerProcess):
    """A ServerProcess whose `affidavit` is the older tree's (its CLI's main, this interpreter;
    -P: the working directory, maybe this checkout, is not put before the tree on the path)."""

    def __init__(self, tree: Path, data_dir: Path, *args: str, **kwargs: object) -> None:
        env = dict(kwargs.pop("env", None) or {})  # type: ignore[call-overload]
        # Only the older tree on the path (clean_env would put this checkout first).
        env.update(PYTHONPATH=str(tree), AFFIDAVIT_PURE_PYTHON="1")
        super().__init__(data_dir, *args, env=env, **kwargs)  # type: ignore[arg-type]

    def command(self) -> list[str]:
        main = "from affidavit.client.cli import main; main()"
        return [sys.executable, "-P", "-c", main, *super().command()[1:]]
