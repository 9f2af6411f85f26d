"""A session kept across processes: where one identity's session chain stands, beside its key.

    KEY.sessions/SESSION_ID.json   {"identity", "session_id", "sequence", "previous_hash",
                                    "pending", "closed"}

Each `affidavit append --session S` signs the next statement of S (sequence, previous leaf
hash) and advances the file only once the log has accepted it; the log checks the same head at
ingest, so a stale or copied file is refused, never forked. A statement whose answer was lost is
kept as `pending` (its exact bytes, base64) and sent again first by the next call: the log
answers a statement it holds with its index, so the chain carries on either way. The file is
replaced atomically; it holds no secret (the key stays in its own file).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from affidavit.client.actor import Actor, Recorded
from affidavit.client.errors import RefusedError
from affidavit.client.trust import write_atomic
from affidavit.statements import build
from affidavit.statements.ids import uuid7


@dataclass
class SessionFile:
    """The state of one session of the identity whose key is at key_path."""

    key_path: Path
    session_id: str

    @property
    def path(self) -> Path:
        return self.key_path.with_name(self.key_path.name + ".sessions") / f"{self.session_id}.json"

    def exists(self) -> bool:
        return self.path.exists()

    def _read(self) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise ValueError(
                f"no session {self.session_id} kept beside {self.key_path} ({self.path} is "
                "missing): open one with `affidavit session open`"
            ) from None
        return data

    def resume(self, actor: Actor) -> None:
        """Put actor's signer where the session stands, settling a pending statement first."""
        data = self._read()
        if data.get("closed"):
            raise ValueError(f"session {self.session_id} is closed; open a new one")
        actor.signer.session_id = self.session_id
        actor.signer.sequence = int(str(data["sequence"]))
        actor.signer.previous_hash = bytes.fromhex(str(data["previous_hash"]))
        pending = data.get("pending")
        if pending:
            leaf = base64.b64decode(str(pending))
            try:
                actor.client.append(leaf)
            except RefusedError:
                pass  # never in the log: the chain did not move
            else:
                actor.signer.advance(leaf)
            self.save(actor)

    def submit(self, actor: Actor, body: build.Body, *, closes: bool = False) -> Recorded:
        """Sign the session's next statement, keep it as pending before it is sent (so a crash
        or a lost answer cannot fork the chain), append it, and advance."""
        statement_id = uuid7()
        leaf = actor.signer.sign(body, statement_id=statement_id)
        self.save(actor, pending=leaf)
        try:
            receipt = actor.client.append(leaf)
        except RefusedError:
            self.save(actor)  # not in the log: the chain did not move
            raise
        actor.signer.advance(leaf)
        self.save(actor, closed=closes)
        return Recorded(statement_id, leaf, receipt)

    def save(self, actor: Actor, *, pending: bytes | None = None, closed: bool = False) -> None:
        s = actor.signer
        data = {
            "identity": actor.identity_id,
            "session_id": self.session_id,
            "sequence": s.sequence,
            "previous_hash": s.previous_hash.hex(),
            "pending": base64.b64encode(pending).decode() if pending else "",
            "closed": closed,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps(data, indent=2) + "\n").encode())
