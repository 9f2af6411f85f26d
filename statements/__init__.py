"""statements: the agent-audit statement model shared by server, client and auditor (no I/O)."""
