"""server.settling.finish: a group of committed batches is published in commit order and
covered by one keep of its newest checkpoint; nothing is answered that is not published and
covered by a kept checkpoint. Real files: KeptCheckpoint writes (and fails to write) on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.server.integrity import KeptCheckpoint
from affidavit.server.settling import Integrated, finish
from affidavit.server.storage import StorageError


def _batch(
    size: int, published: list[int], *, fails: bool = False, keep: bool = True
) -> Integrated[int]:
    """A committed batch growing the tree to size; its publication records size in
    published (or fails); it asks to keep its note unless keep is False."""
    note = f"example.com/log\n{size}\nroot-{size}\n"

    def publish() -> None:
        if fails:
            raise StorageError(f"publication of {size} failed")
        published.append(size)

    cp = Checkpoint("example.com/log", size, bytes(32))
    return Integrated([size], publish, note if keep else None, (cp, note))


def _unwritable(kept: KeptCheckpoint) -> Callable[[], None]:
    """Put a non-empty directory where the kept file goes (nothing can be renamed over it);
    returns what takes it away again."""
    kept.path.mkdir()
    (kept.path / "in the way").touch()

    def clear() -> None:
        (kept.path / "in the way").unlink()
        kept.path.rmdir()

    return clear


def test_a_group_is_published_in_order_and_kept_once_at_its_newest(tmp_path: Path) -> None:
    kept = KeptCheckpoint(tmp_path / "checkpoint")
    published: list[int] = []
    group = [_batch(n, published) for n in (3, 5, 9)]
    ready, failure, kept_note = finish(group, kept, "older")
    assert (ready, failure) == (3, None)
    assert published == [3, 5, 9]
    assert kept_note == group[-1].keep == kept.read()


def test_nothing_is_kept_again_when_the_newest_is_kept_already(tmp_path: Path) -> None:
    kept = KeptCheckpoint(tmp_path / "checkpoint")
    published: list[int] = []
    group = [_batch(4, published, keep=False)]
    clear = _unwritable(kept)  # a keep would fail: none may be tried
    try:
        assert finish(group, kept, "kept before") == (1, None, "kept before")
    finally:
        clear()
    newest = _batch(7, published)
    assert newest.keep is not None
    assert finish([newest], kept, newest.keep) == (1, None, newest.keep)
    assert kept.read() is None  # the note kept last was this one: no write


def test_a_failed_publication_stops_the_rest_and_keeps_only_what_went_before(
    tmp_path: Path,
) -> None:
    kept = KeptCheckpoint(tmp_path / "checkpoint")
    published: list[int] = []
    group = [_batch(3, published), _batch(5, published, fails=True), _batch(9, published)]
    ready, failure, kept_note = finish(group, kept, "older")
    assert ready == 1
    assert isinstance(failure, StorageError) and "publication of 5" in str(failure)
    assert published == [3]  # the batch after the failure is not published over the gap
    assert kept_note == group[0].keep == kept.read()  # not 9's, which is not published


def test_a_failed_keep_answers_none_of_the_group(tmp_path: Path) -> None:
    kept = KeptCheckpoint(tmp_path / "checkpoint")
    published: list[int] = []
    group = [_batch(n, published) for n in (3, 5)]
    clear = _unwritable(kept)
    try:
        ready, failure, kept_note = finish(group, kept, "older")
    finally:
        clear()
    assert ready == 0  # durable and published, but no kept checkpoint covers them
    assert isinstance(failure, StorageError)
    assert "cannot keep the new checkpoint" in str(failure)
    assert kept_note == "older"
    assert published == [3, 5]


@pytest.mark.parametrize("failing", [0, 1, 2])
def test_what_is_answered_is_always_covered_by_the_kept_note(tmp_path: Path, failing: int) -> None:
    """Whichever publication fails, every batch answered has a size at most the kept one's."""
    kept = KeptCheckpoint(tmp_path / "checkpoint")
    published: list[int] = []
    sizes = (2, 6, 11)
    group = [_batch(n, published, fails=i == failing) for i, n in enumerate(sizes)]
    ready, _, kept_note = finish(group, kept, "older")
    assert ready == failing
    covered = sizes[ready - 1] if ready else None
    if covered is None:
        assert kept_note == "older" and kept.read() is None
    else:
        assert kept_note == kept.read() == group[ready - 1].keep
        assert all(size <= covered for size in sizes[:ready])
