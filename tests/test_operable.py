"""Operating a server: Prometheus metrics on --metrics-listen, structured log lines
(--log-format json, --log-level), and gRPC reflection under v1 and v1alpha — against real
`affidavit serve` processes."""

from __future__ import annotations

import json
import re
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
from affidavit.merkle import keys, note
from affidavit.proto import affidavit_pb2 as pb
from affidavit.proto import affidavit_pb2_grpc as pb_grpc
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests import serverproc
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess, status_of

server_factory = serverproc.server_factory

MARKER = b"entry-contents-never-logged-7f3a"


def metrics_port(server: ServerProcess) -> int:
    m = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", server.stderr)
    assert m, server.stderr
    return int(m[1])


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's metrics: (name, sorted labels) -> value."""
    url = f"http://127.0.0.1:{metrics_port(server)}/metrics"
    with urllib.request.urlopen(url, timeout=RPC_TIMEOUT) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics(server_factory: ServerFactory) -> None:
    w_signer, w_verifier = keys.generate_key("witness.example", keys.ALG_COSIGNATURE_V1)
    server = server_factory(
        "--metrics-listen", "127.0.0.1:0", "--witness-key", w_verifier, "--max-entry-bytes", "64"
    )
    stub = server.public_stub
    for entry in (b"one", b"two", b"three", b"two"):
        stub.Append(pb.AppendRequest(entry=entry), timeout=RPC_TIMEOUT)
    status_of(stub.Append, pb.AppendRequest(entry=b""))
    status_of(stub.Append, pb.AppendRequest(entry=MARKER * 4))
    stub.GetInclusionProof(pb.GetInclusionProofRequest(index=1), timeout=RPC_TIMEOUT)
    stub.GetConsistencyProof(pb.GetConsistencyProofRequest(first=1), timeout=RPC_TIMEOUT)
    before_cosigning = scrape(server)
    assert not any(n == "affidavit_witness_cosignature_age_seconds" for n, _ in before_cosigning)
    latest = stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=RPC_TIMEOUT)
    body, _ = note.parse_note(latest.note)
    stub.AddCosignature(
        pb.AddCosignatureRequest(note=note.sign(body, w_signer)), timeout=RPC_TIMEOUT
    )

    m = scrape(server)
    assert m[("affidavit_appends_total", (("result", "new"),))] == 3
    assert m[("affidavit_appends_total", (("result", "duplicate"),))] == 1
    assert m[("affidavit_refusals_total", (("code", "INVALID_ARGUMENT"),))] == 2
    assert m[("affidavit_tree_size", ())] == 3
    assert m[("affidavit_queue_entries", ())] == 0
    assert m[("affidavit_proof_requests_total", (("kind", "inclusion"),))] == 1
    assert m[("affidavit_proof_requests_total", (("kind", "consistency"),))] == 1
    batches = m[("affidavit_batch_entries_count", ())]
    assert 1 <= batches <= 4 and m[("affidavit_batch_entries_sum", ())] == 4
    assert m[("affidavit_integration_seconds_count", ())] == batches
    assert m[("affidavit_integration_seconds_sum", ())] > 0
    age = m[("affidavit_witness_cosignature_age_seconds", (("witness", "witness.example"),))]
    assert 0 <= age < 3600


def json_lines(stderr: str) -> Iterator[dict[str, object]]:
    for line in stderr.splitlines():
        if line.strip():
            yield json.loads(line)  # every line is one JSON object


def test_json_logs(server_factory: ServerFactory) -> None:
    server = server_factory("--log-format", "json", "--max-entry-bytes", "64")
    status_of(server.public_stub.Append, pb.AppendRequest(entry=MARKER * 4))
    server.public_stub.Append(pb.AppendRequest(entry=MARKER), timeout=RPC_TIMEOUT)
    assert server.stop() == 0
    lines = list(json_lines(server.stderr))
    events = [line.get("event") for line in lines]
    for step in ("opened", "stopping", "grpc-stopped", "stopped"):
        assert step in events, (step, lines)
    assert any("affidavit serving" in str(line["message"]) for line in lines)
    [refusal] = [line for line in lines if line.get("event") == "refusal"]
    assert refusal["code"] == "INVALID_ARGUMENT" and refusal["level"] == "info"
    assert "at most 64" in str(refusal["message"])
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert MARKER.decode() not in server.stderr  # neither the refused entry nor the accepted one
    assert "PRIVATE+KEY" not in server.all_output


def test_log_level(server_factory: ServerFactory, tmp_path: Path) -> None:
    """At --log-level warning an uneventful run prints nothing (not even where it serves: the
    operator chose the address)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_factory.create("--log-level", "warning", "--max-entry-bytes", "64")
    server.args += ["--listen", f"127.0.0.1:{port}"]  # the last --listen counts
    server.spawn()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=serverproc.START_TIMEOUT)
        stub = pb_grpc.LogStub(channel)
        status_of(stub.Append, pb.AppendRequest(entry=MARKER * 4))
    server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert server.wait_exit() == 0
    assert server.stderr == ""


def reflect(server: ServerProcess, version: str, request: reflection_pb2.ServerReflectionRequest):
    """One reflection request on grpc.reflection.<version>; its response."""
    channel = grpc.insecure_channel(server.address)
    try:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        [response] = list(call(iter([request]), timeout=RPC_TIMEOUT))
        return response
    finally:
        channel.close()


def test_reflection_v1_and_v1alpha(server: ServerProcess) -> None:
    for version in ("v1", "v1alpha"):
        listed = reflect(server, version, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        assert {
            "affidavit.v1.Log",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names, (version, names)
        for symbol in ("affidavit.v1.Log", "grpc.reflection.v1.ServerReflection"):
            found = reflect(
                server,
                version,
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol),
            )
            assert found.WhichOneof("message_response") == "file_descriptor_response", symbol
            assert found.file_descriptor_response.file_descriptor_proto


server = serverproc.server
