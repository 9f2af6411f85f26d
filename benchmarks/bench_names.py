#!/usr/bin/env python3
"""Scope matching cost: statements.names.matches per (pattern, name), against its ceiling.

The matcher checks the name against the grammar, then runs the pattern's compiled expression
(cached per pattern). The ceiling, measured in the same run, is the compiled expression alone:
one `fullmatch` of a precompiled regular expression, what any regex matcher pays. Prints one
JSON object per line: matches/s for each, median of runs, and the ratio.

    .venv/bin/python benchmarks/bench_names.py
    .venv/bin/python benchmarks/bench_names.py --pairs 20000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time

from affidavit.statements import names

PATTERNS: list[tuple[names.Kind, str]] = [
    ("resource", "repo:acme/*"),
    ("resource", "repo:acme/**"),
    ("resource", "secret:prod/payments/*"),
    ("tool", "github.*"),
    ("tool", "github.create_*"),
]
NAMES: list[tuple[names.Kind, str]] = [
    ("resource", "repo:acme/web"),
    ("resource", "repo:acme/web/src/main.py"),
    ("resource", "repo:acme/../evilcorp/secrets"),
    ("resource", "secret:prod/payments/db@v8"),
    ("tool", "github.create_pull_request"),
    ("tool", "github.x;shell.exec"),
]


def pairs(n: int) -> list[tuple[names.Kind, str, str]]:
    out: list[tuple[names.Kind, str, str]] = []
    while len(out) < n:
        for kind, pattern in PATTERNS:
            for name_kind, name in NAMES:
                if name_kind == kind:
                    out.append((kind, pattern, name))
    return out[:n]


def rate(fn: object, work: list[tuple[names.Kind, str, str]], runs: int) -> float:
    """Median matches per second over runs."""
    assert callable(fn)
    rates = []
    for _ in range(runs):
        began = time.perf_counter()
        for kind, pattern, name in work:
            fn(kind, pattern, name)
        rates.append(len(work) / (time.perf_counter() - began))
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=100_000, help="matches per run (100,000)")
    p.add_argument("--runs", type=int, default=5, help="runs; figures are medians (5)")
    args = p.parse_args()
    work = pairs(args.pairs)
    compiled = {
        (kind, pattern): re.compile(
            pattern.replace(".", r"\.").replace("**", ".+").replace("*", "[^/.]*")
        )
        for kind, pattern in PATTERNS
    }

    def ceiling(kind: names.Kind, pattern: str, name: str) -> bool:
        return compiled[kind, pattern].fullmatch(name) is not None

    floor = rate(ceiling, work, args.runs)
    ours = rate(names.matches, work, args.runs)
    for figure in (
        {"figure": "regex_fullmatch_ceiling", "matches_per_s": round(floor)},
        {"figure": "names.matches", "matches_per_s": round(ours)},
        {"figure": "ratio_to_ceiling", "ratio": round(ours / floor, 3)},
    ):
        print(json.dumps(figure))


if __name__ == "__main__":
    main()
