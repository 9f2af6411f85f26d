"""`affidavit identity` and `grant` against a real server (tests/cliproc.py's shared log):
identities added, rotated, revoked and listed; grants issued, attenuated by an agent, listed,
requiring approval and revoked; refusals (exit 3) and mistakes (exit 2), in one line.
"""

from __future__ import annotations

import base64

from affidavit.statements.signing import IdentityKey

from tests.cliproc import (
    EXIT_NOT_AUTHORISED,
    EXIT_REFUSED,
    EXIT_USAGE,
    UUID7,
    Log,
    log,
    sh,
    usage_error,
    write_identity,
)

__all__ = ["log"]  # fixtures, used by name


# Identities.


def test_identity_add_rotate_revoke(log: Log) -> None:
    cli, work = log.cli, log.work
    carol = write_identity(work, "carol")
    carol_id = cli.new_id(
        *sh("identity add carol --kind human --public-key @carol.pub --key admin.key"),
        *sh("--name Carol --attribute team=web"),
    )
    entry = cli.json("get", "--statement-id", carol_id)
    event = entry["statement"]["identity"]
    assert entry["statement"]["header"]["issuer"] == "admin"
    assert (event["identity_id"], event["display_name"]) == ("carol", "Carol")
    assert event["attributes"] == {"team": "web"}
    assert base64.b64decode(event["public_key"]) == carol.public_key

    # An agent registered with its key inline, and the admin's key from AFFIDAVIT_KEY.
    temp = write_identity(work, "temp")
    added = cli.json(
        *sh("identity add temp --kind agent --owner alice --public-key"),
        base64.b64encode(temp.public_key).decode(),
        env={"AFFIDAVIT_KEY": "admin.key"},
    )
    assert UUID7.match(added["statement_id"]) and added["duplicate"] is False
    assert added["tree_size"] > added["index"] >= 0
    assert added["verified"] == ["checkpoint signature", "inclusion proof", "consistency"]
    act = ("append", "--tool", "github.get_file", "--resource", "repo:acme/web", "--access", "read")
    no_grant = cli.json(*act, "--key", "temp.key", code=EXIT_NOT_AUTHORISED)
    assert no_grant["verdict"] == "NO_GRANT"

    write_identity(work, "temp", name="temp-2")
    rotated = cli.json(
        "identity", "rotate", "temp", "--public-key", "@temp-2.pub", "--key", "admin.key"
    )
    assert rotated["index"] > added["index"]
    line = cli.fails(EXIT_REFUSED, *act, "--key", "temp.key")
    assert "PERMISSION_DENIED" in line and "retired" in line
    assert cli(*act, "--key", "temp-2.key").returncode == EXIT_NOT_AUTHORISED
    revoked = cli.json("identity", "revoke", "temp", "--key", "admin.key")
    revoked_id = revoked["statement_id"]
    # The registry as the log's events left it.
    listed = {i["identity_id"]: i for i in cli.json("identity", "list")}
    assert {"admin", "alice", "bot", "carol", "temp"} <= set(listed)
    assert listed["admin"]["registered_at"] == 0 and listed["admin"]["kind"] == "admin"
    assert (listed["bot"]["kind"], listed["bot"]["owner"]) == ("agent", "alice")
    assert listed["temp"]["revoked_at"] == revoked["index"]
    assert listed["temp"]["rotated_at"] == [rotated["index"]]
    assert listed["temp"]["key_id"] == IdentityKey.load(work / "temp-2.key").key_id
    assert listed["carol"]["registered_by"] == "admin"
    table = cli.ok("identity", "list").stdout
    assert table.startswith("IDENTITY") and "revoked at #" in table and "key rotated at #" in table
    assert (
        cli.json("get", "--statement-id", revoked_id)["statement"]["identity"]["identity_id"]
        == "temp"
    )
    line = cli.fails(EXIT_REFUSED, *act, "--key", "temp-2.key")
    assert "revoked" in line

    # Refusals and mistakes.
    dan = write_identity(work, "dan")
    add_dan = ("identity", "add", "dan", "--kind", "human", "--public-key", "@dan.pub")
    line = cli.fails(EXIT_REFUSED, *add_dan, "--key", "alice.key")
    assert "only a registered admin may register" in line
    line = cli.fails(EXIT_USAGE, *add_dan[:-1], "!!", "--key", "admin.key")
    assert "32 bytes of base64" in line
    assert "KEY=VALUE" in cli.fails(EXIT_USAGE, *add_dan, "--attribute", "x", "--key", "admin.key")
    assert "--key" in usage_error(*add_dan)
    admin_key = str(work / "admin.key")
    assert "--kind" in usage_error(*add_dan[:4], "robot", *add_dan[5:], "--key", admin_key)
    assert dan.public_key  # never registered
    assert cli.ok("search", "--subject", "dan").stdout.strip() == "no matches"


def test_grant(log: Log) -> None:
    cli = log.cli
    grant = sh("grant bot --tool github.* --resource repo:acme/docs --access update --ticket CHG-9")
    grant_id = cli.new_id(*grant, "--not-after", "2999-01-01T00:00:00", "--key", "alice.key")
    g = cli.json("get", "--statement-id", grant_id)["statement"]["grant"]
    assert (g["grantee"], g["tools"], g["resources"], g["access"], g["ticket"]) == (
        "bot",
        ["github.*"],
        ["repo:acme/docs"],
        ["UPDATE"],
        "CHG-9",
    )
    assert int(g["not_after_ms"]) == 32472144000000

    # An agent may not grant on its own authority...
    line = cli.fails(EXIT_REFUSED, *grant, "--key", "bot.key")
    assert "PERMISSION_DENIED" in line and "only a registered human may grant" in line
    # ...only attenuate a grant it holds, and only within it.
    write_identity(log.work, "helper")
    cli.ok(
        *sh("identity add helper --kind agent --owner alice --public-key @helper.pub"),
        *sh("--key admin.key"),
    )
    narrow = ("grant", "helper", "--resource", "repo:acme/web", "--access", "create")
    child = cli.json(
        *narrow, "--tool", "github.create_issue", "--parent", log.grant_id, "--key", "bot.key"
    )
    assert UUID7.match(child["grant_id"])
    line = cli.fails(
        EXIT_REFUSED, *narrow, "--tool", "shell.*", "--parent", log.grant_id, "--key", "bot.key"
    )
    assert "shell.*" in line
    line = cli.fails(EXIT_USAGE, *grant, "--not-before", "soon", "--key", "alice.key")
    assert "--not-before" in line and "'soon' is not a time" in line and "yesterday" in line
    # Relative times; the window must not be empty.
    relative = cli.json(*grant, "--not-before", "now", "--not-after", "+8h", "--key", "alice.key")
    window = cli.json("get", "--statement-id", relative["grant_id"])["statement"]["grant"]
    assert int(window["not_after_ms"]) - int(window["not_before_ms"]) == 8 * 3600 * 1000
    line = cli.fails(
        EXIT_USAGE,
        *grant,
        "--not-before",
        "today",
        "--not-after",
        "yesterday",
        "--key",
        "alice.key",
    )
    assert "--not-after" in line and "later than --not-before" in line
    # `grant issue NAME` is the long form (for a grantee named like a subcommand).
    long_form = cli.json("grant", "issue", *grant[1:], "--key", "alice.key")
    assert UUID7.match(long_form["grant_id"])

    # Listing: to a grantee, and under a grantor's authority.
    to_bot = cli.json("grant", "list", "--grantee", "bot")
    assert {g["grant_id"] for g in to_bot} >= {grant_id, log.grant_id, relative["grant_id"]}
    assert all(g["grantee"] == "bot" for g in to_bot)
    assert child["grant_id"] not in {g["grant_id"] for g in to_bot}
    under_alice = {g["grant_id"]: g for g in cli.json("grant", "list", "--grantor", "alice")}
    assert child["grant_id"] in under_alice  # bot's child grant is under alice's authority
    assert under_alice[child["grant_id"]]["issuer"] == "bot"
    assert under_alice[log.grant_id]["ticket"] == "CHG-1042"
    mine = cli.json("grant", "list", "--grantee", "helper", "--grantor", "alice")
    assert [g["grant_id"] for g in mine] == [child["grant_id"]]
    human = cli.ok("grant", "list", "--grantee", "helper").stdout
    assert f"grant {child['grant_id']}" in human and "bot -> helper" in human
    assert f"(under {log.grant_id})" in human and "tools github.create_issue" in human
    assert "no grants" in cli.ok("grant", "list", "--grantee", "nobody").stdout
    assert "give --grantee, --grantor or both" in cli.fails(EXIT_USAGE, "grant", "list")
    line = cli.fails(
        EXIT_REFUSED, "grant", "list", "--grantee", "bot", env={"AFFIDAVIT_TOKEN": None}
    )
    assert "--token" in line and "AFFIDAVIT_TOKEN" in line
    assert "--access" in usage_error(
        "grant", "bot", "--tool", "x", "--resource", "y", "--key", str(log.work / "alice.key")
    )


def test_grant_that_requires_approval_and_its_revocation(log: Log) -> None:
    """A grant whose every action needs alice's approval: the agent cannot opt out with its
    own decision. Then alice withdraws the grant; only she (or an admin) may."""
    cli = log.cli
    grant = cli.json(
        *sh("grant bot --tool github.* --resource repo:acme/docs --access update"),
        *sh("--require-approval --approver alice --key alice.key"),
    )
    gid = grant["grant_id"]
    append = sh(
        "append --key bot.key --tool github.update_file --resource repo:acme/docs "
        f"--access update --grant {gid}"
    )
    unapproved = cli.json(*append, code=EXIT_NOT_AUTHORISED)
    assert (unapproved["verdict"], unapproved["verdict_reason"]) == (
        "OUT_OF_SCOPE",
        "approval-missing",
    )
    assert "PERMISSION_DENIED" in cli.fails(EXIT_REFUSED, "revoke-grant", gid, "--key", "bot.key")
    revoked = cli.json("revoke-grant", gid, "--reason", "key rotation", "--key", "alice.key")
    assert revoked["grant_id"] == gid and UUID7.match(revoked["revocation_id"])
    assert "already revoked" in cli.fails(EXIT_REFUSED, "revoke-grant", gid, "--key", "alice.key")
    after = cli.json(*append, code=EXIT_NOT_AUTHORISED)
    assert (after["verdict"], after["verdict_reason"]) == ("OUT_OF_SCOPE", "grant-revoked")
