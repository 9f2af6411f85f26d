"""What an audit reports: each finding with its kind and severity, progress while it runs,
and the report of the whole audit (for a person, or as JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

Severity = Literal["error", "violation", "info"]

FINDING_KINDS: Final[dict[str, Severity]] = {
    "root-mismatch": "error",
    "entries-mismatch": "error",
    "invalid-statement": "error",
    "verdict-mismatch": "error",
    "out-of-scope-action": "violation",
    "no-grant-action": "violation",
    "missing-outcome": "info",
}
"""Every kind of finding and its severity (see the module docstring)."""

FAILING: Final[frozenset[Severity]] = frozenset({"error", "violation"})
"""Severities that make a report fail."""

MAX_FINDINGS = 10_000
"""Findings kept in a report by default; beyond it they are only counted."""


@dataclass(frozen=True)
class Finding:
    """One thing the audit found: at index (None for the log as a whole), of a kind (a key of
    FINDING_KINDS, which gives its severity), in words."""

    index: int | None
    kind: str
    message: str

    @property
    def severity(self) -> Severity:
        return FINDING_KINDS[self.kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass(frozen=True)
class Progress:
    """How far an audit is: entries done of total, the rate of this run (entries/s) and the
    estimated seconds left (None until there is a rate)."""

    done: int
    total: int
    rate: float
    eta: float | None


@dataclass
class Report:
    """The outcome of an audit up to one verified checkpoint.

    counts holds statements by kind (identity, grant, approval, intent, outcome) and recomputed
    verdicts (in_scope, out_of_scope, no_grant); finding_counts every finding by kind, including
    those beyond the ones listed in findings (findings_not_listed of them).
    """

    origin: str
    size: int
    checkpoint_root: bytes
    witnesses: tuple[str, ...]
    root: bytes
    entries: int
    counts: dict[str, int]
    findings: list[Finding]
    finding_counts: dict[str, int]
    findings_not_listed: int = 0
    resumed_from: int = 0
    previous_size: int | None = None
    """When resumed from a position saved at an older checkpoint: that checkpoint's size."""
    elapsed: float = 0.0

    @property
    def root_ok(self) -> bool:
        return self.root == self.checkpoint_root

    def severity_counts(self) -> dict[Severity, int]:
        out: dict[Severity, int] = {"error": 0, "violation": 0, "info": 0}
        for kind, n in self.finding_counts.items():
            out[FINDING_KINDS[kind]] += n
        return out

    @property
    def ok(self) -> bool:
        """No errors and no violations (info findings do not fail an audit)."""
        counts = self.severity_counts()
        return not any(counts[s] for s in FAILING)

    @property
    def rate(self) -> float:
        """Entries per second audited by this run (resumed entries excluded)."""
        done = self.entries - self.resumed_from
        return done / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (hashes in lowercase hex)."""
        return {
            "ok": self.ok,
            "origin": self.origin,
            "checkpoint": {
                "size": self.size,
                "root": self.checkpoint_root.hex(),
                "witnesses": list(self.witnesses),
            },
            "root": self.root.hex(),
            "root_ok": self.root_ok,
            "entries": self.entries,
            "counts": dict(self.counts),
            "severity_counts": dict(self.severity_counts()),
            "finding_counts": dict(self.finding_counts),
            "findings": [f.to_json() for f in self.findings],
            "findings_not_listed": self.findings_not_listed,
            "resumed_from": self.resumed_from,
            "previous_size": self.previous_size,
            "elapsed_s": round(self.elapsed, 3),
            "rate": round(self.rate, 1),
        }

    def text(self) -> str:
        """The report for a person to read."""
        c, s = self.counts, self.severity_counts()
        cosigned = f", cosigned by {', '.join(self.witnesses)}" if self.witnesses else ""
        lines = [
            f"audit of {self.origin} up to tree size {self.size}{cosigned}",
            f"  root       {'matches' if self.root_ok else 'DOES NOT MATCH'} the checkpoint "
            f"({self.checkpoint_root.hex()[:16]}…)",
            f"  entries    {self.entries}: {c['identity']} identity, {c['grant']} grant, "
            f"{c.get('grant_revocation', 0)} grant revocation, {c['approval']} approval, "
            f"{c['intent']} action intent, {c['outcome']} outcome, "
            f"{c.get('refusal', 0)} refusal record",
            f"  verdicts   {c['in_scope']} in scope, {c['out_of_scope']} out of scope, "
            f"{c['no_grant']} without a grant",
            f"  findings   {s['error']} error(s), {s['violation']} violation(s), {s['info']} info",
        ]
        if self.resumed_from:
            since = (
                f"; {self.size - self.previous_size} entries added since it was saved at size "
                f"{self.previous_size}, proven consistent"
                if self.previous_size is not None
                else ""
            )
            lines.insert(
                3, f"  resumed    at entry {self.resumed_from} from a saved position{since}"
            )
        for f in self.findings:
            where = "log" if f.index is None else f"#{f.index}"
            lines.append(f"  {f.severity.upper():<9} {where:>9}  {f.kind}: {f.message}")
        if self.findings_not_listed:
            lines.append(f"  … and {self.findings_not_listed} more finding(s) not listed")
        if s["error"]:
            verdict = "FAILED: the log's integrity is broken"
        elif s["violation"]:
            verdict = "FAILED: the log records actions outside their authority"
        else:
            verdict = "OK"
        lines.append(f"result: {verdict}")
        return "\n".join(lines)
