# Types of canonical JSON's C fast path, statements/_canonicalcore.c (see canonical.loads).
from typing import Any

MAX_DEPTH: int

def parse(text: str, /) -> tuple[Any] | None: ...
