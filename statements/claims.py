"""What no rule can check: the fields of an action that are only its producer's word.

The log verifies who signed, under which grant chain, approved by whom, with which parameters
(statements.ingest); it refuses a principal_chain the grants do not bear out and any
scopes_granted. What remains self-asserted — the model, the agent's name and version, the
producer's policy and where it was enforced, the effect an OUTCOME says it left — is shown in
every output under this one label, never beside the verified facts as if it were one.
"""

from __future__ import annotations

from affidavit.proto import affidavit_pb2 as pb


def producer_claims(action: pb.AgentAction) -> dict[str, str]:
    """The action's self-asserted fields that are set, by name."""
    a, z = action.actor, action.authorization
    fields = {
        "agent_name": a.agent_name,
        "agent_version": a.agent_version,
        "model": a.model,
        "framework": a.framework,
        "policy_id": z.policy_id,
        "policy_version": z.policy_version,
        "matched_rule": z.matched_rule,
        "enforcement_point": z.enforcement_point,
        "effect_ref": action.outcome.effect_ref,
    }
    return {k: v for k, v in fields.items() if v}
