"""`edge-vad models backends`: which inference backends run here, what the others need, and the Edge TPUs found."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edge_vad.backends import REGISTRY, available_backends


def edgetpu_lines() -> list:
    """The Edge TPU devices found (usb:N, pci:N) and, where the runtime is installed, its interpreter pair."""
    from edge_vad.backends.edgetpu_runtime import edgetpu_interpreter, edgetpu_library_path, list_devices

    devices, how = list_devices()
    if devices:
        found = ", ".join(f"{d.name} ({d.path}{'; ' + d.note if d.note else ''})" for d in devices)
        lines = [f"Edge TPU devices ({how}): {found}"]
    else:
        lines = [f"Edge TPU devices ({how}): none found"]
    if edgetpu_library_path() is not None:
        module, verdict = edgetpu_interpreter()
        lines.append(("Edge TPU runtime pair: " if verdict.known_to_work else "Edge TPU runtime pair (WARNING): ")
                     + verdict.line)
    return lines


def choice_line(bundle_dir=None, precision=None) -> str:
    """What `run` would choose here for a bundle (default: the shipped one) and why, as the run log says it."""
    from edge_vad.bundle import default_bundle_dir, load_manifest
    from edge_vad.errors import EdgeVadError
    from edge_vad.runtime.backend_choice import choose_backend, live_host

    try:
        folder = bundle_dir or default_bundle_dir()
        return f"{folder}: " + choose_backend(load_manifest(folder), None, live_host(), precision).line()
    except EdgeVadError as exc:
        return f"no backend of the bundle can run here: {exc}"
    finally:
        from edge_vad.backends.edgetpu_runtime import release_probed

        release_probed()


def list_backends(console: Console | None = None) -> int:
    """Print one row per registered backend, then the Edge TPUs; returns the exit code (0: listing never fails)."""
    table = Table(title="edge-vad inference backends")
    table.add_column("backend", style="bold")
    table.add_column("available")
    table.add_column("what it is")
    table.add_column("found / what to install", overflow="fold")
    for status in available_backends():
        mark = "[green]yes[/green]" if status.available else "[red]no[/red]"
        detail = status.detail if status.available else f"{status.reason}: {status.detail}"
        table.add_row(status.name, mark, escape(REGISTRY[status.name].description), escape(detail))  # hints hold [extras]
    console = console or Console()
    console.print(table)
    for line in edgetpu_lines():
        console.print(escape(line))
    console.print(escape("run would choose, for " + choice_line()))
    return 0
