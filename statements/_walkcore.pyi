# Types of the schema walk's C fast path, statements/_walkcore.c (see schema_walk.walk).
from typing import Any

MAX_REPEATED: int

def strings(data: bytes, plan: list[Any] | None, /) -> tuple[list[str], int] | None: ...
