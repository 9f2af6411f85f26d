"""Regenerate proto/affidavit_pb2*.py[i] from proto/affidavit.proto (run from anywhere).

protoc (grpcio-tools) writes the modules; mypy-protobuf's plugins write their type stubs, so
the servicer and stubs are typed too. Both generators are pinned in pyproject.toml.

The generated modules are committed; tests/test_proto.py checks they match a fresh run, so run
this after every change to the .proto and commit the result.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def generate(out_dir: Path) -> None:
    """Write affidavit_pb2.py[i] and affidavit_pb2_grpc.py[i] under out_dir/proto."""
    (out_dir / "proto").mkdir(parents=True, exist_ok=True)
    plugins = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{ROOT}",
        f"--plugin=protoc-gen-mypy={shutil.which('protoc-gen-mypy', path=plugins)}",
        f"--plugin=protoc-gen-mypy_grpc={shutil.which('protoc-gen-mypy_grpc', path=plugins)}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        str(ROOT / "proto" / "affidavit.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
