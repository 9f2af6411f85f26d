# Types of the secret guard's compiled keyword search, statements/_guardcore.c.

def occurrences(
    lowered: str, starts: bytes, table: list[tuple[str, ...] | None], /
) -> list[tuple[int, str]]: ...
def pieces(
    value: object, name_keys: tuple[str, ...], piece_max: int, /
) -> tuple[list[str], list[str | None]] | None: ...
