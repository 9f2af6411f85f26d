"""An OpenAI Agents SDK agent whose every tool call is recorded in an affidavit log.

Run it against a log (`affidavit serve`) with a registered agent key and a grant for it:

    pip install 'affidavit[openai-agents]'
    OPENAI_API_KEY=... AFFIDAVIT_LOG=127.0.0.1:7420 AFFIDAVIT_LOG_KEY=@data/log.pub \\
    AFFIDAVIT_KEY=code-agent.key AFFIDAVIT_GRANT=<grant id> \\
        python examples/openai_agents_agent.py "open an issue about the flaky login test"

The tests drive `make_agent` with a scripted Model instead of a real one.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from affidavit.adapters.openai_agents import AuditHooks
from affidavit.adapters.recording import Target, ToolCall
from affidavit.proto import affidavit_pb2 as pb
from agents import Agent, Model, Runner, function_tool

from affidavit import Actor, Client, IdentityKey, TrustPolicy


def target(call: ToolCall) -> Target:
    """What each tool touches, so grants can name resources: repositories and mailboxes."""
    args = call.arguments
    if call.tool == "send_email":
        return Target(f"mailto:{args['to']}", pb.CREATE)
    access = pb.DELETE if call.tool == "delete_repository" else pb.CREATE
    return Target(f"repo:{args['repo']}", access)


def make_agent(model: Model | str, effects: list[str]) -> Agent[None]:
    """The agent; each tool appends what it did to effects (a stand-in for the real API)."""

    @function_tool
    def create_issue(repo: str, title: str, token: str) -> str:
        """Open an issue in a repository (token: the API token to use)."""
        effects.append(f"issue:{repo}:{title}")
        return f"opened issue '{title}' in {repo}"

    @function_tool
    def delete_repository(repo: str) -> str:
        """Delete a repository."""
        effects.append(f"deleted:{repo}")
        return f"deleted {repo}"

    @function_tool(needs_approval=True)
    def send_email(to: str, body: str) -> str:
        """Send an email (a human approves each one)."""
        effects.append(f"email:{to}")
        return f"sent to {to}"

    return Agent(
        name="code-agent",
        instructions="You maintain the acme repositories.",
        model=model,
        tools=[create_issue, delete_repository, send_email],
    )


def hooks_for(actor: Actor, grant_id: str) -> AuditHooks:
    return AuditHooks(actor, grant_ids=[grant_id], target=target)


async def main() -> None:
    log_key = os.environ["AFFIDAVIT_LOG_KEY"]
    if log_key.startswith("@"):
        log_key = Path(log_key[1:]).read_text().strip()
    with Client(os.environ.get("AFFIDAVIT_LOG", "127.0.0.1:7420"), TrustPolicy(log_key)) as c:
        actor = Actor(c, IdentityKey.load(Path(os.environ["AFFIDAVIT_KEY"])))
        hooks = hooks_for(actor, os.environ["AFFIDAVIT_GRANT"])
        effects: list[str] = []
        agent = make_agent(os.environ.get("MODEL", "gpt-4.1"), effects)
        result = await Runner.run(agent, " ".join(sys.argv[1:]), hooks=hooks)
        print(result.final_output)


if __name__ == "__main__":
    asyncio.run(main())
