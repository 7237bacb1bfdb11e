"""What ``wildsci build`` tells the user on the terminal: progress lines and the per-stage table.

Everything goes to stderr (rich), so stdout stays free for ``--dry-run``'s plan and for scripts.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

_ERR = Console(stderr=True, highlight=False)


def log(msg: str) -> None:
    """One progress line, prefixed so it is told apart from library output."""
    _ERR.print(f"[bold cyan]wildsci build[/]: {msg}")


def summary_table(stages: list[dict], title: str) -> None:
    """The build report's stages as a table: rows in, rows out, and why the rest were dropped."""
    t = Table(title=title, show_lines=False)
    for col in ("stage", "in", "out", "dropped", "drop reasons"):
        t.add_column(col, justify="right" if col in ("in", "out", "dropped") else "left")
    for st in stages:
        drops = st.get("drops", {})
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1])) or "-"
        t.add_row(st["name"], str(st["in"]), str(st["out"]), str(sum(drops.values())), reasons)
    Console(stderr=True).print(t)
