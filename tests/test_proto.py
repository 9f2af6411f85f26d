"""The committed generated modules are exactly what proto/generate.py makes from the .proto."""

from __future__ import annotations

from pathlib import Path

from affidavit.proto.generate import ROOT, generate


def test_generated_modules_are_current(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in (
        "affidavit_pb2.py",
        "affidavit_pb2.pyi",
        "affidavit_pb2_grpc.py",
        "affidavit_pb2_grpc.pyi",
    ):
        fresh = (tmp_path / "proto" / name).read_text()
        committed = (ROOT / "proto" / name).read_text()
        assert fresh == committed, f"proto/{name} is stale: run python proto/generate.py"
