"""A LangChain v1 agent whose every tool call is recorded in an affidavit log.

Run it against a log (`affidavit serve`) with a registered agent key and a grant for it:

    pip install 'affidavit[langchain]' langchain-openai
    AFFIDAVIT_LOG=127.0.0.1:7420 AFFIDAVIT_LOG_KEY=@data/log.pub \\
    AFFIDAVIT_KEY=code-agent.key AFFIDAVIT_GRANT=<grant id> MODEL=openai:gpt-4.1 \\
        python examples/langchain_agent.py "open an issue about the flaky login test"

The tests drive `build_agent` with LangChain's fake chat model instead of a real one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from affidavit.adapters.langchain import AuditMiddleware
from affidavit.adapters.recording import Target, ToolCall
from affidavit.adapters.spool import Spool
from affidavit.proto import affidavit_pb2 as pb
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph

from affidavit import Actor, Client, IdentityKey, TrustPolicy


def target(call: ToolCall) -> Target:
    """What each tool touches, so grants can name resources: repositories and mailboxes."""
    args = call.arguments
    if call.tool == "send_email":
        return Target(f"mailto:{args['to']}", pb.CREATE)
    access = pb.DELETE if call.tool == "delete_repository" else pb.CREATE
    return Target(f"repo:{args['repo']}", access)


def make_tools(effects: list[str]) -> list[BaseTool]:
    """The agent's tools; each appends what it did to effects (a stand-in for the real API)."""

    @tool
    def create_issue(repo: str, title: str, token: str) -> str:
        """Open an issue in a repository (token: the API token to use)."""
        effects.append(f"issue:{repo}:{title}")
        return f"opened issue '{title}' in {repo}"

    @tool
    def delete_repository(repo: str) -> str:
        """Delete a repository."""
        effects.append(f"deleted:{repo}")
        return f"deleted {repo}"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        effects.append(f"email:{to}")
        return f"sent to {to}"

    return [create_issue, delete_repository, send_email]


def build_agent(
    model: BaseChatModel,
    actor: Actor,
    grant_id: str,
    effects: list[str],
    *,
    spool: Spool | None = None,
) -> tuple[CompiledStateGraph[Any, Any, Any, Any], AuditMiddleware]:
    """The agent, and its audit middleware (for record_review when a human decides)."""
    audit = AuditMiddleware(
        actor,
        grant_ids=[grant_id],
        target=target,
        spool=spool,
        approval_required=["send_email"],
    )
    agent = create_agent(
        model,
        make_tools(effects),
        # Human review first (outermost), so the audit sees the call as it will run.
        middleware=[HumanInTheLoopMiddleware(interrupt_on={"send_email": True}), audit],
        checkpointer=InMemorySaver(),
    )
    return agent, audit


def main() -> None:
    from langchain.chat_models import init_chat_model

    log_key = os.environ["AFFIDAVIT_LOG_KEY"]
    if log_key.startswith("@"):
        log_key = Path(log_key[1:]).read_text().strip()
    with Client(os.environ.get("AFFIDAVIT_LOG", "127.0.0.1:7420"), TrustPolicy(log_key)) as c:
        actor = Actor(c, IdentityKey.load(Path(os.environ["AFFIDAVIT_KEY"])))
        effects: list[str] = []
        agent, _ = build_agent(
            init_chat_model(os.environ["MODEL"]), actor, os.environ["AFFIDAVIT_GRANT"], effects
        )
        config: RunnableConfig = {"configurable": {"thread_id": "example"}}
        result = agent.invoke({"messages": [HumanMessage(" ".join(sys.argv[1:]))]}, config)
        print(result["messages"][-1].content)


if __name__ == "__main__":
    main()
