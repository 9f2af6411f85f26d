"""A resumed audit continues to the log's current checkpoint, Ctrl-C keeps its position, and
the position file stays proportionate (against real `affidavit serve` processes).

An audit saved at one size and resumed after the log grew must audit the new entries (and
report what they hold), after the log proves the new checkpoint consistent with the saved
one; a position from another history is refused. Ctrl-C stops between chunks and saves first,
so the resumed audit reaches the report of one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from affidavit.client import audit as auditor
from affidavit.client.actor import Actor
from affidavit.client.audit import AuditInterrupted, RecordedEntry, Report, audit, audit_entries
from affidavit.client.client import Client
from affidavit.client.errors import VerificationError
from affidavit.merkle import hashing
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.signing import IdentityKey

from tests import serverproc
from tests.processes import children, wait_gone
from tests.serverproc import ServerFactory, ServerProcess, run_cli
from tests.test_audit import cast, connect, pull_request

server_factory = serverproc.server_factory


def comparable(report: Report) -> dict[str, Any]:
    """A report without what depends on how it was run (timing, where it resumed)."""
    data = report.to_json()
    for key in ("elapsed_s", "rate", "resumed_from", "previous_size"):
        del data[key]
    return data


def stray(client: Client, data_dir: Path) -> None:
    """An agent acting outside its grant: recorded OUT_OF_SCOPE, a violation for the audit."""
    c = cast(client, data_dir)
    with c.bot.action(
        "shell.exec",
        "host:prod-db",
        pb.EXECUTE,
        {"cmd": "ls"},
        grant_ids=[c.grant.statement_id],
        enforce=False,  # recorded and run: the violation the audit must find
    ):
        pass


def test_resume_audits_what_the_log_added_since(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(entry_format="statements")
    position = tmp_path / "audit.pos"
    with connect(server) as client:
        c = cast(client, server.data_dir)
        pull_request(c.bot, c.grant.statement_id, 0)
        first = audit(client, resume=position)
        assert first.ok and first.size == 6
        # The log grows: more work in scope, and an action outside any grant.
        pull_request(c.bot, c.grant.statement_id, 1)
        with c.bot.action(
            "shell.exec",
            "host:db",
            pb.EXECUTE,
            {"cmd": "ls"},
            grant_ids=[c.grant.statement_id],
            enforce=False,
        ):
            pass
        size = client.checkpoint().checkpoint.size
        assert size == 10
        resumed = audit(client, resume=position)
        assert (resumed.size, resumed.entries) == (size, size)
        assert (resumed.resumed_from, resumed.previous_size) == (6, 6)
        assert resumed.root_ok and not resumed.ok
        assert [f.index for f in resumed.findings if f.kind == "out-of-scope-action"] == [8]
        assert "resumed    at entry 6 from a saved position; 4 entries added" in resumed.text()
        assert comparable(resumed) == comparable(audit(client))  # as a fresh audit sees it
        # Resumed again with nothing new: the same report, from the end.
        again = audit(client, resume=position)
        assert again.resumed_from == size and comparable(again) == comparable(resumed)


def test_cli_resume_reports_the_new_entries(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory(entry_format="statements")
    env = {
        "AFFIDAVIT_SERVER": server.address,
        "AFFIDAVIT_LOG_KEY": server.verifier_key,
        "AFFIDAVIT_TOKEN": server.auditor_token,
        "AFFIDAVIT_TRUST_DIR": str(tmp_path / "trust"),
    }
    position = str(tmp_path / "audit.pos")
    r = run_cli("audit", "--resume", position, "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["checkpoint"]["size"] == 1
    with connect(server) as client:
        stray(client, server.data_dir)
    r = run_cli("audit", "--resume", position, "--json", env=env)
    assert r.returncode == 1, r.stderr  # the new entries hold a violation: it is reported
    report = json.loads(r.stdout)
    assert report["checkpoint"]["size"] == report["entries"] == 6
    assert (report["resumed_from"], report["previous_size"]) == (1, 1)
    assert report["finding_counts"]["out-of-scope-action"] == 1


def test_resume_refuses_a_position_from_another_history(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """A position saved on one branch of a fork cannot be continued on the other: the log
    cannot prove its checkpoint consistent with the saved one."""
    a = server_factory(entry_format="statements")
    with connect(a) as client:
        cast(client, a.data_dir)
    a.stop()
    copy = tmp_path / "fork"
    shutil.copytree(a.data_dir, copy)
    a.start()
    b = server_factory(data_dir=copy, entry_format="statements")
    position = tmp_path / "audit.pos"
    with connect(a) as client:
        register(client, a.data_dir, "agent-on-a")
        audit(client, resume=position)
    with connect(b) as client:
        for n in range(3):  # b's branch grows past a's
            register(client, b.data_dir, f"agent-on-b-{n}")
        with pytest.raises(VerificationError, match="not consistent"):
            audit(client, resume=position)


def register(client: Client, data_dir: Path, identity_id: str) -> None:
    admin = Actor(client, IdentityKey.load(data_dir / "admin.key"))
    admin.register(identity_id, pb.AGENT, IdentityKey.generate(identity_id).public_key)


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RecordedEntry]]:
    server = ServerProcess(tmp_path_factory.mktemp("grown") / "log", entry_format="statements")
    server.start()
    try:
        with connect(server) as client:
            c = cast(client, server.data_dir)
            for n in range(12):
                pull_request(c.bot, c.grant.statement_id, n)
            yield [
                RecordedEntry(e.index, e.data, e.verdict, e.verdict_reason, e.admitted_ms)
                for e in client.entries(0, client.checkpoint().checkpoint.size)
            ]
    finally:
        server.kill()


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_saves_the_position(
    grown: list[RecordedEntry],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    monkeypatch.setattr(auditor, "CHUNK", 4)
    # Ctrl-C as in a terminal, whatever this run inherited (a background job ignores it).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_and_resume(grown, tmp_path, workers)
    finally:
        signal.signal(signal.SIGINT, inherited)


def _interrupt_and_resume(grown: list[RecordedEntry], tmp_path: Path, workers: int) -> None:
    from tests.test_audit import fake_checkpoint

    checkpoint = fake_checkpoint([e.data for e in grown])
    whole = audit_entries(lambda s, e: grown[s:e], checkpoint, workers=workers)

    def interrupted_at_10(start: int, end: int) -> Iterator[RecordedEntry]:
        for entry in grown[start:end]:
            if entry.index == 10:
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C does, mid-chunk
            yield entry

    position = tmp_path / "audit.pos"
    with pytest.raises(AuditInterrupted) as stopped:
        audit_entries(interrupted_at_10, checkpoint, resume=position, workers=workers)
    assert stopped.value.position == position and stopped.value.total == len(grown)
    # At the next chunk boundary replayed (workers read ahead: it may be before entry 10).
    assert stopped.value.done % 4 == 0 and 0 < stopped.value.done < len(grown)
    assert auditor.load_position(position).next_index == stopped.value.done
    # The handler is gone: a later Ctrl-C is an ordinary KeyboardInterrupt again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = audit_entries(lambda s, e: grown[s:e], checkpoint, resume=position, workers=workers)
    assert resumed.resumed_from == stopped.value.done
    assert comparable(resumed) == comparable(whole)


def test_an_audit_that_ignores_ctrl_c_goes_on(grown: list[RecordedEntry], tmp_path: Path) -> None:
    # Started with SIGINT ignored (nohup, a background job): a Ctrl-C neither stops it nor
    # leaves a handler behind.
    from tests.test_audit import fake_checkpoint

    checkpoint = fake_checkpoint([e.data for e in grown])

    def interrupted_at_10(start: int, end: int) -> Iterator[RecordedEntry]:
        for entry in grown[start:end]:
            if entry.index == 10:
                os.kill(os.getpid(), signal.SIGINT)
            yield entry

    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        report = audit_entries(interrupted_at_10, checkpoint, resume=tmp_path / "audit.pos")
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert report.entries == len(grown) and report.root_ok


def test_position_file_is_proportionate(grown: list[RecordedEntry], tmp_path: Path) -> None:
    """The replayed state is compressed: the position of an audit is well under the size of
    the entries it audited (about a seventh, measured at 50,000 entries by
    benchmarks/bench_audit.py --only position)."""
    from tests.test_audit import fake_checkpoint

    position = tmp_path / "audit.pos"
    checkpoint = fake_checkpoint([e.data for e in grown])
    audit_entries(lambda s, e: grown[s:e], checkpoint, resume=position)
    entries_bytes = sum(len(e.data) for e in grown)
    assert position.stat().st_size < entries_bytes / 2
    replay = auditor.load_position(position)
    assert len(replay.kv.data) > len(grown)


def test_audit_workers_end_with_a_killed_auditor() -> None:
    # SIGKILL gives the auditor no chance to stop its workers: each must notice on its own.
    program = (
        "import sys, time\n"
        "from affidavit.client.audit.pool import Pool\n"
        "pool = Pool(2)\n"
        "assert len(pool.collect(pool.submit([b'not a statement'], []))[0]) == 1\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    auditor_proc = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, text=True
    )
    try:
        assert auditor_proc.stdout is not None
        assert auditor_proc.stdout.readline().strip() == "ready"
        workers = children(auditor_proc.pid)
        assert len(workers) == 2  # the pool's two workers, nothing else
        auditor_proc.kill()
        auditor_proc.wait()
        assert not wait_gone(workers)
    finally:
        auditor_proc.kill()


def test_a_dead_worker_fails_the_audit_clearly() -> None:
    # A worker killed from outside: the auditor says so rather than wait for its answer.
    from affidavit.client.audit.pool import Pool

    pool = Pool(1)
    try:
        # The answer: the entry's refusal, and its leaf hash.
        prepared, hashes = pool.collect(pool.submit([b"not a statement"], []))
        assert isinstance(prepared[0], tuple) and hashes == [hashing.leaf_hash(b"not a statement")]
        pool._procs[0].kill()
        pool._procs[0].wait()
        with pytest.raises(RuntimeError, match="audit worker 0 died"):
            pool.collect(pool.submit([b"not a statement"], []))
    finally:
        pool.close()
