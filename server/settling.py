"""Settling committed batches: what remains between a batch's commit and its callers' answers.

The sequencer's publisher thread settles committed batches in commit order, a group at a time
(the batches committed while the group before was settling): each batch's publication (a
shared log's step 3, server.storage_postgres), then one keep (KeptCheckpoint) of the newest
checkpoint among them, which covers all of them: every earlier batch's tree is a prefix of its
tree. Streams commit many small batches; a group costs one thread hop and one keep (a file
write, two fsyncs), however many batches it holds.

Invariant: a batch is answered only once its publication is done and a checkpoint covering it
(its own or a later one) is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from affidavit.merkle.checkpoint import Checkpoint
from affidavit.server.append_queue import Pending
from affidavit.server.integrity import KeptCheckpoint
from affidavit.server.storage import StorageError

T = TypeVar("T")


@dataclass
class Integrated(Generic[T]):
    """A batch committed: its outcomes, what remains before its callers may be answered (a
    shared log's publication, to run in commit order; the checkpoint note to keep outside the
    database, or one newer; None: nothing), and its tree."""

    outcomes: list[T]
    publish: Callable[[], None] | None
    keep: str | None
    tree: tuple[Checkpoint, str]


@dataclass
class Committed(Generic[T]):
    """A committed batch waiting to be settled, and when its integration began."""

    batch: list[Pending[T]]
    done: Integrated[T]
    began: float


def finish(
    group: Sequence[Integrated[T]], kept: KeptCheckpoint | None, kept_note: str
) -> tuple[int, Exception | None, str]:
    """Publish each batch of group in commit order, then keep the newest checkpoint among
    those published (unless kept_note, the one kept last, is it); how many of group (from the
    first) may be answered, the failure that stopped the rest (None: none did), and the note
    kept last."""
    ready, failure = 0, None
    for done in group:
        if done.publish is not None:
            try:
                done.publish()
            except Exception as e:
                failure = e
                break
        ready += 1
    keep = next((d.keep for d in reversed(group[:ready]) if d.keep is not None), None)
    if keep is not None and keep != kept_note:
        assert kept is not None, "a note to keep without a kept checkpoint"
        try:
            kept.keep(keep)
        except StorageError as e:
            return 0, e, kept_note  # published, durable, not acknowledged
        kept_note = keep
    return ready, failure, kept_note
