"""An MCP server with a few repository tools, to put behind `affidavit mcp-proxy`.

    affidavit mcp-proxy --key code-agent.key --grant <grant id> \\
        --resource 'create_issue=repo:{repo}' --access create_issue=create \\
        --resource 'delete_repository=repo:{repo}' --access delete_repository=delete \\
        --resource 'create_release=repo:{repo}' --access create_release=create \\
        --approval-required create_release \\
        -- python examples/mcp_server.py

Point any MCP client (Claude Desktop, an agent framework, the SDK's ClientSession) at that
command instead of this server's: the tools are the same, and every call is in the log.
A stand-in for a real server: each tool appends what it did to the file given by --effects.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("acme-tools", instructions="Tools for the acme repositories.")
effects: Path | None = None


def _did(what: str) -> None:
    if effects is not None:
        with effects.open("a") as f:
            f.write(what + "\n")


@server.tool()
def create_issue(repo: str, title: str, token: str = "") -> str:
    """Open an issue in a repository (token: the API token to use)."""
    _did(f"issue:{repo}:{title}")
    return f"opened issue '{title}' in {repo}"


@server.tool()
def create_release(repo: str, tag: str) -> str:
    """Publish a release of a repository (a human approves each one)."""
    _did(f"release:{repo}:{tag}")
    return f"released {tag} of {repo}"


@server.tool()
def delete_repository(repo: str) -> str:
    """Delete a repository."""
    _did(f"deleted:{repo}")
    return f"deleted {repo}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--effects", type=Path, help="append what each tool did to this file")
    effects = parser.parse_args().effects
    server.run()
