"""Reading `doctor`'s report back: one entry per check, its wrapped lines joined."""

from __future__ import annotations

import re

HEADER = re.compile(r"^(?P<check>\S.*?) \.{3,} (?P<verdict>ok|FAIL|skip)$")


def doctor_rows(out: str) -> dict[str, str]:
    """check name -> "VERDICT result fix: …" on one line, as the report wrapped it."""
    rows: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        head = HEADER.match(line)
        if head is not None:
            current = rows.setdefault(head["check"], [head["verdict"]])
        elif line.startswith("  ") and current is not None:
            current.append(line.strip())
        else:
            current = None
    return {check: " ".join(parts) for check, parts in rows.items()}


def squeezed(text: str) -> str:
    """Text without whitespace: a path longer than a line is cut where the report wrapped it."""
    return "".join(text.split())
