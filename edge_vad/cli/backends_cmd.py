"""`edge-vad models backends`: which inference backends run here, and what the others need."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edge_vad.backends import REGISTRY, available_backends


def list_backends(console: Console | None = None) -> int:
    """Print one row per registered backend; returns the exit code (0: listing never fails)."""
    table = Table(title="edge-vad inference backends")
    table.add_column("backend", style="bold")
    table.add_column("available")
    table.add_column("what it is")
    table.add_column("found / what to install", overflow="fold")
    for status in available_backends():
        mark = "[green]yes[/green]" if status.available else "[red]no[/red]"
        detail = status.detail if status.available else f"{status.reason}: {status.detail}"
        table.add_row(status.name, mark, escape(REGISTRY[status.name].description), escape(detail))  # hints hold [extras]
    (console or Console()).print(table)
    return 0
