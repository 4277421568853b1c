"""The one way the benchmarks' ``--write-docs`` rewrite their section of docs/performance.md.

A section runs from its ``## `` heading to the next ``## `` heading. It is replaced by the new
text (or appended when the page has none), every other section left as it was. A
``keep_after`` heading (``### …``) inside the old section keeps itself and everything after it
up to the section's end: the hand-written findings below a generated table, which a rerun must
not erase.
"""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, heading: str, section: str, keep_after: str | None = None) -> None:
    """Write ``section`` in place of ``path``'s ``heading`` section (see the module)."""
    text = path.read_text() if path.exists() else "# Performance\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        path.write_text(text.rstrip() + "\n\n" + section.rstrip() + "\n")
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    kept = next((lines[i:end] for i in range(start + 1, end) if lines[i].strip() == keep_after), [])
    new = [*lines[:start], *section.rstrip().splitlines()]
    if kept:
        new += ["", *kept]
    out = "\n".join(new).rstrip() + "\n"
    tail = lines[end:]
    if tail:
        out += "\n" + "\n".join(tail).rstrip() + "\n"
    path.write_text(out)
