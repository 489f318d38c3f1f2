"""Render the fault scenarios' report rows as RELIABILITY.md's table.

python -m tests.faults.report data/faults.jsonl
"""

from __future__ import annotations

import json
import sys


def table(rows: list[dict]) -> str:
    lines = [
        "| scenario | events sent | faults injected | records expected "
        "| lost | duplicated | wrong | recovery (s) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['events_sent']:,} | {r['faults']} "
            f"| {r['records_expected']:,} | {r['lost']} | {r['duplicated']} "
            f"| {r['wrong']} | {r['recovery_s']} |"
        )
    return "\n".join(lines)


def main(path: str) -> None:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows.sort(key=lambda r: r["scenario"])
    print(table(rows))


if __name__ == "__main__":
    main(sys.argv[1])
