"""Evidence bundles: one file that proves an agent's action and its authority, offline.

    bundle = export(client, action_id="0197…")         # or export(client, index=42)
    Path("evidence.json").write_text(bundle.to_json())
    report = verify(Path("evidence.json").read_text(), TrustPolicy(log_key, witnesses, 2))
    print(report.summary())

Format `affidavit-bundle/1`: UTF-8 JSON (Bundle.to_json writes it with a 2-space indent, keys
in this order, non-ASCII characters as they are, a final newline)::

    {
      "format": "affidavit-bundle/1",
      "checkpoint": "<signed note: checkpoint body, blank line, the log's signature line and
                     the witnesses' cosignature/v1 lines>",
      "entries": [
        {
          "index": <0-based log index>,
          "leaf": "<standard padded base64 of the exact leaf bytes (a SignedStatement)>",
          "proof": ["<base64 of a 32-byte hash>", ...],
          "tlog_proof": "<the same as c2sp.org/tlog-proof@v1 text: index, proof, checkpoint>",
          "decoded": {"key_id": "<signing key id>", "statement": {<the statement, proto3 JSON>}}
        },
        ...
      ]
    }

entries ascend strictly by index; each proof is the RFC 9162 inclusion proof (from the leaf up)
of its leaf at its index in the tree of the checkpoint's size. tlog_proof repeats index, proof
and checkpoint as one C2SP tlog-proof, so each entry can be checked on its own by any tlog-proof
verifier (`affidavit verify-proof`); it must be exactly that text. "decoded" is the leaf decoded,
for a person reading the file beside the exact bytes (optional; when present it must be exactly
what the leaf decodes to, so it can never tell a story the leaf does not). The file makes no
claim of its own: which action it is about, who did what, on whose authority — everything
verify reports is read from leaves and a note whose bytes it has verified.

What verify reads is the file's content, not its layout: indentation, key order and line
endings (CRLF) may change, as editors and tools change them. Every value is held to one
spelling — base64 (in the JSON and in the note's signature lines) must be canonical, no key may
repeat or be unknown — so changing any value fails verification, except inside a signature line
by a key the verifier's policy does not know, which it ignores (as Go's note.Open does) and
only counts.

What export puts in (entries up to the checkpoint's size): the action's INTENT and OUTCOME and
every approval of it (Search action_id: an action is its agent's action id, so another agent's
action, or an approval for another agent, with the same id is not part of it); the approval the
INTENT names; every grant the INTENT names and each one's parents up to the human grantor
(Search statement_id); and every identity event (register, rotate, revoke) about each signer
of those statements, each grantee, the acting agent's owner and, in turn, the admins who signed
those events — back to the genesis admin, self-registered at index 0 (Search subject). The
checkpoint is the newest one the client's policy accepts: with a witness quorum, the newest
cosigned one.

What verify checks, offline, with only the log's and the witnesses' public keys:
  - the checkpoint note carries the log's signature and a quorum of witness cosignatures
    (client.verify.open_checkpoint), and no key signs it twice;
  - every entry's leaf hash, recomputed from its bytes, is included at its index in that
    checkpoint's tree;
  - the entries replay, in index order, through the log's own admission rules
    (statements.ingest.prepare and admit over a statements.state.LogState): schema and secret
    guard; each signature under the key its issuer held at that index, the key history derived
    from the bundled identity events starting with the genesis admin; each identity event signed
    by an admin known at that point; each grant by a human or by the grantee of its parent,
    within that parent (statements.scope.attenuation_problem); each approval by a human; the
    action's scope verdict recomputed (grantee is the actor, tool / operation / resource /
    access within the grant, client time inside every window of the chain, the chain rooted in
    a human, and where the policy decision was allow-if-approved, a human's approval bound to
    the action id and its exact parameter digest); the OUTCOME linked to the INTENT by leaf hash;
  - completeness: the bundle holds one action (one agent's action id), its INTENT, every grant
    the INTENT names with all its parents, and the approval it names; and nothing else — an
    entry the action's evidence does not need is refused.

What it cannot check offline (a full replay, `affidavit audit`, can):
  - session chains: a bundle holds a few statements of each session, not the chain. A link is
    checked where two bundled statements of one session are adjacent (and a replayed or forked
    sequence is refused); a gap is accepted;
  - absence: that no revocation of a signer, grantor or approver lies between the entries
    shown, that a grant was not already used up (max uses: uses are counted over the bundled
    action only), that no OUTCOME or other approval exists when none is bundled. Nothing signed
    points to these entries, so a bundle stripped of one still verifies (without it in the
    story); export always includes them, and an honest log refuses statements signed with a
    retired key at ingest — only the full log proves it did. (A dropped key rotation is caught:
    the key that signed later statements is then unknown.);
  - the verdict the log recorded at ingest: it is not in the leaf; verify recomputes it from the
    bundled entries, which gives the log's verdict unless one of the above intervened.
"""

from affidavit.client.bundle.export import AmbiguousActionError, ExportError, agents_of, export
from affidavit.client.bundle.file import FORMAT, MAX_ENTRIES, Bundle, BundleEntry
from affidavit.client.bundle.report import ApprovalInfo, GrantLink, Report, describe
from affidavit.client.bundle.verify import needed_entries, verify

__all__ = [
    "FORMAT",
    "MAX_ENTRIES",
    "AmbiguousActionError",
    "ApprovalInfo",
    "Bundle",
    "BundleEntry",
    "ExportError",
    "GrantLink",
    "Report",
    "agents_of",
    "describe",
    "export",
    "needed_entries",
    "verify",
]
