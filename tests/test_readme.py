"""The README's walk-through runs as written, against a real server, and tells the story."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Walk-through", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README's walk-through has no sh block"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_readme_walkthrough(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "AFFIDAVIT_LISTEN": address,
        "AFFIDAVIT_SERVER": address,
        "PYTHONPATH": str(ROOT),
    }
    script = "set -euo pipefail\n" + walkthrough()
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "serve.log").read_text() if (tmp_path / "serve.log").exists() else ""
    assert proc.returncode == 0, f"walk-through failed:\n{out}\n--- serve.log ---\n{log}"
    # The story comes out: who authorised the pull request, and the evidence verified offline.
    assert "alice@example.com" in out and "CHG-1042" in out
    assert "commit:3f2a9c1e" in out
    assert "tool-not-granted" in out  # the out-of-scope attempt, flagged
    # The stolen key: its use is recorded, the grant withdrawn, the next attempt refused and on
    # the log's record, and who-authorised shows the grant revoked.
    assert "refused, as it should be" in out and "key-retired" in out
    assert "refused attempts: 1 in 1 record(s) signed by the log" in out  # identity history
    assert "REVOKED at log index" in out
    assert "exit 5: recorded, but not authorised" in out
    assert "audit reported findings" in out
    bundle = (tmp_path / "evidence.json").read_text()
    assert '"format": "affidavit-bundle/1"' in bundle or '"format":"affidavit-bundle/1"' in bundle
    # No private key material was ever printed.
    for key_file in tmp_path.glob("*.key"):
        secret = key_file.read_text().strip().split("+", 4)[4]  # PRIVATE+KEY+name+hash+seed
        assert secret not in out and secret not in log


def python_example() -> str:
    """The first Python block of the README's Python section: the integration example."""
    section = (ROOT / "README.md").read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python section has no python block"
    return match.group(1)


def test_readme_python_example(tmp_path: Path) -> None:
    """The example runs as written (only the server's address changed) against a real log:
    one import line, the action recorded INTENT then OUTCOME, its body run only in scope."""
    from affidavit.proto import affidavit_pb2 as pb
    from affidavit.statements.build import statement_of

    from affidavit import AccessKind, Actor, Client, IdentityKey, TrustPolicy
    from tests.serverproc import ServerProcess

    example = python_example()
    imports = [line for line in example.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from affidavit import AccessKind, Actor, Client, IdentityKey, TrustPolicy"]
    assert len([line for line in example.splitlines() if line.strip()]) <= 7
    server = ServerProcess(tmp_path / "srv", entry_format="statements")
    server.start()
    try:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "log.pub").write_text(server.verifier_key + "\n")
        agent_key, alice_key = IdentityKey.generate("code-agent"), IdentityKey.generate("alice")
        (tmp_path / "code-agent.key").write_text(agent_key.text() + "\n")
        policy = TrustPolicy(server.verifier_key)
        with Client(server.address, policy, token=server.auditor_token) as client:
            admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
            admin.register("alice", pb.HUMAN, alice_key.public_key)
            admin.register("code-agent", pb.AGENT, agent_key.public_key, owner="alice")
            alice = Actor(client, alice_key)
            grants = {
                scope: alice.grant(
                    "code-agent", tools=["github.*"], resources=[scope], access=[AccessKind.CREATE]
                ).statement_id
                for scope in ("repo:acme/*", "repo:other/*")
            }
            for scope, ran in (("repo:acme/*", True), ("repo:other/*", False)):
                script = (
                    "import json\n"
                    "params = {'repo': 'acme/web', 'title': 'Fix login', 'head': 'fix-login'}\n"
                    f"grant = {grants[scope]!r}\n"
                    "ran = []\n"
                    "def open_pull_request(params):\n"
                    "    ran.append(params)\n"
                    "    return 'commit:3f2a9c1e'\n"
                    "try:\n"
                    + "".join(f"    {line}\n" for line in example.splitlines())
                    + "    print(json.dumps({'ran': bool(ran), 'action_id': act.action_id}))\n"
                    "except Exception as e:\n"
                    "    error = {'error': type(e).__name__, 'why': str(e)}\n"
                    "    print(json.dumps({'ran': bool(ran), **error}))\n"
                ).replace('"127.0.0.1:7420"', repr(server.address))
                r = subprocess.run(
                    [sys.executable, "-c", script],
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert r.returncode == 0, r.stderr
                result = json.loads(r.stdout)
                assert result["ran"] is ran, (scope, result)
                if not ran:
                    assert result["error"] == "NotAuthorisedError"
                    continue
                hits = list(client.search(action_id=[result["action_id"]]))
                recorded = [
                    statement_of(next(client.entries(h.index, h.index + 1)).data) for h in hits
                ]
                phases = [st.action.phase for st in recorded]
                assert phases == [pb.AgentAction.INTENT, pb.AgentAction.OUTCOME]
                assert recorded[1].action.outcome.effect_ref == "commit:3f2a9c1e"
                assert [h.verdict for h in hits] == [pb.IN_SCOPE, pb.IN_SCOPE]
    finally:
        server.kill()
