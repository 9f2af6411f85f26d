"""affidavit installs under one namespace and never shadows an application's own packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("merkle", "proto", "statements", "server", "client", "adapters", "console")
"""The top-level folders installed as affidavit.<part>."""


def test_wheel_holds_only_the_affidavit_namespace(tmp_path: Path) -> None:
    # Built as `pip install affidavit` would build it, from the tracked files alone (a
    # working tree's build/ directory can hold files a fresh checkout would not put in the
    # wheel); every file must sit under affidavit/ (or the wheel's own metadata), never a
    # top-level client/, server/, proto/ ...
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    tracked = [name for name in listed if (ROOT / name).is_file()]  # not deleted since
    source = tmp_path / "source"
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("affidavit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"affidavit"}
    # Every file the parts are made of, subpackages (client/cli, client/audit) and the
    # console's templates included: an editable install finds them without being told, a
    # wheel only when pyproject lists them.
    parts = [name for name in tracked if name.split("/", 1)[0] in PARTS]
    assert parts
    missing = [name for name in parts if f"affidavit/{name}" not in names]
    assert not missing, f"not in the wheel (add its package to pyproject): {missing}"
    assert any(n.startswith("affidavit/merkle/_hashcore") and n.endswith(".so") for n in names)
    for core in ("_walkcore", "_canonicalcore", "_guardcore"):
        so = f"affidavit/statements/{core}"
        assert any(n.startswith(so) and n.endswith(".so") for n in names), core
    assert any(n.startswith("affidavit/server/_facetcore") and n.endswith(".so") for n in names)
    assert "affidavit/proto/affidavit_pb2.pyi" in names
    assert "affidavit/py.typed" in names


def test_an_application_with_its_own_client_package_keeps_it(tmp_path: Path) -> None:
    for name in ("client", "server", "proto", "merkle", "statements"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHOSE = 'application {name}'\n")
    program = (
        "import client, server, proto, merkle, statements\n"
        "import affidavit\n"
        "from affidavit import Actor, Client, IdentityKey, TrustPolicy, Verdict\n"
        "from affidavit.client.client import Client as C\n"
        "assert Client is C and Verdict.Name(Verdict.IN_SCOPE) == 'IN_SCOPE'\n"
        "for m in (client, server, proto, merkle, statements):\n"
        "    assert m.WHOSE.startswith('application'), m.__file__\n"
        "import affidavit.merkle\n"
        "assert affidavit.merkle.__file__ != merkle.__file__\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_importing_a_part_does_not_load_the_client() -> None:
    # `import affidavit` is what every part's import runs first; the server and the pure
    # libraries must not pull the client (and gRPC) in through it.
    program = (
        "import sys\n"
        "import affidavit.merkle, affidavit.statements.canonical\n"
        "loaded = [m for m in sys.modules if m.startswith('affidavit.client')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_the_server_loads_the_console_only_when_it_serves_it() -> None:
    # The console (and its templates' jinja2) is mounted lazily by `serve --http-listen`: the
    # server's modules, its HTTP face included, must not import it.
    program = (
        "import sys\n"
        "import affidavit.server.app, affidavit.server.cli, affidavit.server.http_console\n"
        "loaded = [m for m in sys.modules if m.startswith('affidavit.console') or m == 'jinja2']\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_the_base_install_never_imports_an_agent_framework() -> None:
    # The adapters' frameworks are optional extras: the library, the CLI group and its help
    # must not import them (nor the adapters) unless an adapter command runs.
    program = (
        "import sys\n"
        "import affidavit\n"
        "from affidavit import Actor, Client, NotAuthorisedError\n"
        "from affidavit.client.cli import main\n"
        "import click\n"
        "ctx = click.Context(main)\n"
        "main.list_commands(ctx)\n"
        "frameworks = ('affidavit.adapters', 'langchain', 'langgraph', 'agents', 'mcp',\n"
        "              'opentelemetry', 'aiohttp')\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in frameworks\n"
        "          or m.startswith('affidavit.adapters')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
