"""Bring a store's statement state to the layout this server reads, once, when it opens.

The rewrite itself is statements.state_migration (layout 1 -> 2: actions keyed by agent and
action id). Here it is applied to a LogStore: under the right to extend the log
(LogStore.rewrite_derived), unless the store's layout mark already says layout 2, the
rewrite and the mark are written in one atomic write. A crash before that write leaves
layout 1 whole, and the next open runs the rewrite again; after it, layout 2 whole, and the
mark makes every later open a single read. A new log gets the mark at its first open.

Every process that writes the store must run this layout. An older affidavit (up to cc86bae)
does not read the mark, and on a shared store would go on writing layout 1 keys after the
rewrite. LevelDB has one writer (its lock file). On PostgreSQL the same transaction moves the
schema from version 3 to 4 (server.postgres_schema.fence), which fences those frontends: one
starting refuses version 4, and one already running fails its next batch (a column it does not
write) and rolls it back, acknowledging nothing. Upgrade every frontend of a log together:
older ones stop appending from the moment the first new one opens the log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from affidavit.server.storage import StorageError
from affidavit.statements import state_migration
from affidavit.statements.state import STATE_LAYOUT, STATE_LAYOUT_KEY

if TYPE_CHECKING:  # server.logstore opens every store through migrate()
    from affidavit.server.logstore import DerivedRewrite, LogStore

log = logging.getLogger("affidavit.server")


def migrate(store: LogStore) -> bool:
    """Rewrite store's statement state to layout 2 unless it is marked so; whether it wrote.
    StorageError, and nothing written, if it is marked with a layout this server does not read."""

    def plan() -> DerivedRewrite | None:
        mark = store.get(STATE_LAYOUT_KEY)
        if mark == STATE_LAYOUT:
            return None
        if mark is not None:  # a later affidavit's layout: rewriting it as layout 1 would ruin it
            raise StorageError(
                f"the statement state is in layout {mark.decode(errors='replace')!r}, which this "
                f"affidavit does not read (it reads layout {STATE_LAYOUT.decode()}): run the "
                "affidavit that wrote it, or a newer one"
            )
        rewrite = state_migration.rewrite(store.scan)
        if rewrite.puts or rewrite.deletes:  # a new log, or one without actions, is only marked
            log.info(
                "rewriting the statement state to layout %s: %d records moved or rebuilt, "
                "%d removed",
                STATE_LAYOUT.decode(),
                len(rewrite.puts),
                len(rewrite.deletes),
                extra={"event": "state-layout"},
            )
        rewrite.puts[STATE_LAYOUT_KEY] = STATE_LAYOUT
        return rewrite.puts, rewrite.deletes

    return store.rewrite_derived(plan)
