"""An action's chain of authority as a drawing: root human -> grants -> agent -> action.

The chain comes from a verified evidence bundle's Report (client.bundle), human first. Each grant
hop says its scope and, where it re-delegates, what it narrowed from its parent; the approval the
action names is drawn into the action; when the action is not in scope, the node whose rule
failed is marked with the log's reason code. Layout is one column, top to bottom, so the drawing
reads in the order authority flowed; coordinates are computed here, the SVG written by the
template.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote

from affidavit.client.bundle import GrantLink, Report
from affidavit.proto import affidavit_pb2 as pb

WIDTH = 720
LINE = 17
PAD = 10
GAP = 34

# Which node a verdict reason blames: the grant the action acted under, the chain's root, the
# approval, or the action itself.
_BLAMES_GRANT = {
    "not-grantee",
    "grant-not-yet-valid",
    "grant-expired",
    "window-straddle",
    "grant-revoked",
    "grant-exhausted",
    "tool-not-granted",
    "operation-not-granted",
    "resource-not-granted",
    "access-not-granted",
}
_BLAMES_ROOT = {"grantor-revoked", "chain-not-rooted-in-human", "chain-too-long"}
_BLAMES_APPROVAL = {
    "approval-missing",
    "approval-mismatch",
    "approval-rejected",
    "approver-not-valid",
}


@dataclass(frozen=True)
class Node:
    """A box: what it is (human, grant, agent, approval, action), its lines, where it links."""

    kind: str
    title: str
    lines: tuple[str, ...]
    href: str
    bad: str
    """The reason code when this node is where the action's authority failed, else ""."""
    y: int = 0

    @property
    def height(self) -> int:
        return PAD * 2 + LINE * (1 + len(self.lines))


@dataclass(frozen=True)
class Edge:
    label: str
    y1: int
    y2: int


@dataclass(frozen=True)
class Drawing:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int


def _access(values: object) -> str:
    return ", ".join(pb.AccessKind.Name(a).lower() for a in values)  # type: ignore[attr-defined]


def scope_lines(g: pb.Grant) -> tuple[str, ...]:
    """A grant's scope in words, one facet a line."""
    lines = [
        f"tools: {', '.join(g.tools) or '(none)'}",
        f"resources: {', '.join(g.resources) or '(none)'}",
        f"access: {_access(g.access) or '(none)'}",
    ]
    if g.operations:
        lines.append(f"operations: {', '.join(g.operations)}")
    if g.max_uses:
        lines.append(f"max uses: {g.max_uses}")
    if g.not_before_ms or g.not_after_ms:
        lines.append(f"window (ms): {g.not_before_ms or '-'} .. {g.not_after_ms or '-'}")
    return tuple(lines)


def narrowed(parent: pb.Grant, child: pb.Grant) -> tuple[str, ...]:
    """What a re-delegation narrowed from its parent, facet by facet."""
    out = []
    for facet, a, b in (
        ("tools", list(parent.tools), list(child.tools)),
        ("resources", list(parent.resources), list(child.resources)),
        ("operations", list(parent.operations), list(child.operations)),
    ):
        if a != b:
            out.append(f"narrowed {facet}: {', '.join(a) or '*'} -> {', '.join(b) or '(none)'}")
    if list(parent.access) != list(child.access):
        out.append(f"narrowed access: {_access(parent.access)} -> {_access(child.access)}")
    if child.max_uses and child.max_uses != parent.max_uses:
        out.append(f"narrowed max uses: {parent.max_uses or 'unlimited'} -> {child.max_uses}")
    return tuple(out)


def _grant_node(link: GrantLink, parent: GrantLink | None, bad: str) -> Node:
    g = link.grant
    lines = [f"by {link.grantor} ({link.grantor_kind}) to {g.grantee}", *scope_lines(g)]
    if g.ticket:
        lines.append(f"ticket {g.ticket}")
    if parent is not None:
        lines.extend(narrowed(parent.grant, g))
    return Node("grant", f"grant {link.grant_id} (index {link.index})", tuple(lines), "", bad)


def chain(report: Report, *, entry_href: str, identity_href: str) -> Drawing:
    """The drawing of report's authority chain; entry_href formats a link to a log index
    ({index}), identity_href one to an identity ({identity})."""
    reason = report.verdict_reason if report.verdict != "IN_SCOPE" else ""
    nodes: list[Node] = []
    labels: list[str] = []
    if report.authority:
        root = report.authority[0]
        nodes.append(
            Node(
                "human",
                root.grantor,
                (f"{root.grantor_kind}: the authority the chain starts from",),
                identity_href.format(identity=quote(root.grantor, safe="")),
                reason if reason in _BLAMES_ROOT else "",
            )
        )
        for n, link in enumerate(report.authority):
            parent = report.authority[n - 1] if n else None
            last = n == len(report.authority) - 1
            node = _grant_node(link, parent, reason if last and reason in _BLAMES_GRANT else "")
            labels.append("delegates" if n == 0 else "re-delegates")
            nodes.append(replace(node, href=entry_href.format(index=link.index)))
        labels.append("to")
    owner = f", owned by {report.owner}" if report.owner else ""
    nodes.append(
        Node(
            "agent",
            report.agent,
            (f"agent{owner}",),
            identity_href.format(identity=quote(report.agent, safe="")),
            reason if not report.authority and reason else "",
        )
    )
    approval = next((a for a in report.approvals if a.named_by_action), None)
    if approval is not None or reason in _BLAMES_APPROVAL:
        labels.append("asks")
        if approval is None:
            nodes.append(Node("approval", "no valid approval", (), "", reason))
        else:
            state = "bound to these parameters" if approval.problem is None else approval.problem
            decision = pb.Approval.Decision.Name(approval.approval.decision)
            nodes.append(
                Node(
                    "approval",
                    f"{decision} by {approval.approver} (index {approval.index})",
                    (state, f"parameters digest {approval.approval.parameters_digest[:16]}…"),
                    entry_href.format(index=approval.index),
                    reason if reason in _BLAMES_APPROVAL else "",
                )
            )
    labels.append("acts")
    op = report.intent.operation
    nodes.append(
        Node(
            "action",
            f"{op.tool_name} on {op.resource}",
            (
                f"{pb.AccessKind.Name(op.access).lower()}, action {report.action_id}",
                f"verdict: {report.verdict}" + (f" ({reason})" if reason else ""),
            ),
            entry_href.format(index=report.intent_index),
            reason if reason and not any(n.bad for n in nodes) else "",
        )
    )
    placed: list[Node] = []
    edges: list[Edge] = []
    y = PAD
    for n, node in enumerate(nodes):
        if n:
            edges.append(Edge(labels[n - 1], y - GAP, y))
        placed.append(replace(node, y=y))
        y += node.height + GAP
    return Drawing(tuple(placed), tuple(edges), WIDTH, y - GAP + PAD)
