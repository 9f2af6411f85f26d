"""Drop-in adapters that make agent frameworks record their tool calls in an affidavit log.

One module per framework, each behind its own extra (the base install imports none of them):

    affidavit.adapters.langchain      pip install 'affidavit[langchain]'      AuditMiddleware
    affidavit.adapters.openai_agents  pip install 'affidavit[openai-agents]'  AuditHooks
    affidavit.adapters.mcp            pip install 'affidavit[mcp]'            affidavit mcp-proxy
    affidavit.adapters.otel           pip install 'affidavit[otel]'           AuditSpanExporter

What they share: recording (INTENT before the effect, OUTCOME after, enforcement, fail closed
or spooled) and spool (the durable local queue used when failing open).
"""
