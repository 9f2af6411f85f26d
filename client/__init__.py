"""Client side: client library, verifier, witness, auditor, evidence bundles and the CLI."""
