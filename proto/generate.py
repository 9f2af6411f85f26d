"""Regenerate proto/affidavit_pb2*.py[i] from proto/affidavit.proto (run from anywhere).

protoc (grpcio-tools) writes the modules; mypy-protobuf's plugins write their type stubs, so
the servicer and stubs are typed too. Both generators are pinned in pyproject.toml.

The package is installed as `affidavit.proto`, and protoc derives the generated imports (and the
descriptor's file name) from the .proto file's path under its include root; so the .proto is
compiled as `affidavit/proto/affidavit.proto` from a scratch include root, which makes the
generated code import `affidavit.proto.affidavit_pb2` and never a top-level `proto`.

The generated modules are committed; tests/test_proto.py checks they match a fresh run, so run
this after every change to the .proto and commit the result.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = (
    "affidavit_pb2.py",
    "affidavit_pb2.pyi",
    "affidavit_pb2_grpc.py",
    "affidavit_pb2_grpc.pyi",
)


def generate(out_dir: Path) -> None:
    """Write affidavit_pb2.py[i] and affidavit_pb2_grpc.py[i] under out_dir/proto."""
    (out_dir / "proto").mkdir(parents=True, exist_ok=True)
    plugins = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as scratch:
        include = Path(scratch) / "include"
        (include / "affidavit" / "proto").mkdir(parents=True)
        shutil.copyfile(
            ROOT / "proto" / "affidavit.proto", include / "affidavit" / "proto" / "affidavit.proto"
        )
        generated = Path(scratch) / "out"
        generated.mkdir()
        args = [
            "protoc",
            f"-I{include}",
            f"--plugin=protoc-gen-mypy={shutil.which('protoc-gen-mypy', path=plugins)}",
            f"--plugin=protoc-gen-mypy_grpc={shutil.which('protoc-gen-mypy_grpc', path=plugins)}",
            f"--python_out={generated}",
            f"--mypy_out={generated}",
            f"--grpc_python_out={generated}",
            f"--mypy_grpc_out={generated}",
            str(include / "affidavit" / "proto" / "affidavit.proto"),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for name in OUTPUTS:
            shutil.copyfile(generated / "affidavit" / "proto" / name, out_dir / "proto" / name)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
