"""Checks `edge-vad run` makes before any model loads, so a problem costs seconds, not a scored video.

    problems = extras_problems(cfg)                                   # also `edge-vad validate-config`
    problems += output_problems(cfg, events_dir, report_dir, names)    # every folder the run will write
    raise_problems(problems)                                           # one line each, non-zero exit

An output folder must be a folder (not a file), creatable, and writable: a probe file is created and
removed in it, which catches read-only mounts (EROFS) and permissions even for root-only paths.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import List, Optional, Sequence

from edge_vad.config import Config
from edge_vad.errors import EdgeVadError, MissingDependency

MQTT_EXTRA_HINT = "pip install 'edge-vad[mqtt]' (paho-mqtt>=2)"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing or broken
        return False


def extras_problems(cfg: Config) -> List[str]:
    """Optional libraries the config needs and this Python lacks, one line each."""
    problems = []
    if cfg.mqtt.enabled and not _has_module("paho.mqtt.client"):
        problems.append(f"[mqtt] enabled = true needs paho-mqtt, which is not installed; install it with "
                        f"{MQTT_EXTRA_HINT}, or set enabled = false")
    return problems


def mqtt_spool_dir(cfg: Config, events_dir: Path) -> Path:
    return cfg.mqtt.spool_dir if cfg.mqtt.spool_dir is not None else events_dir / "mqtt-spool"


def folder_problem(path: Path, what: str) -> Optional[str]:
    """None when `path` is (or can be made) a writable folder; else one line saying what is wrong."""
    if path.exists() and not path.is_dir():
        return f"{what} {path} is a file, not a folder; move the file away or choose another folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{what} {path} cannot be created ({exc.strerror or exc}); check the path and its permissions"
    probe = path / f".edge-vad-write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return (f"{what} {path} is not writable ({exc.strerror or exc}); remount it read-write, fix its permissions "
                "or choose another folder")
    return None


def output_problems(cfg: Config, events_dir: Path, report_dir: Optional[Path], names: Sequence[str]) -> List[str]:
    """Every folder this run will write to, checked now."""
    folders = []
    ev = cfg.events
    if ev.jsonl or ev.clips or ev.snapshots:
        folders.append((events_dir, "events folder"))
    if ev.clips:
        folders.append((events_dir / "clips", "clips folder"))
    if ev.snapshots:
        folders.append((events_dir / "snapshots", "snapshots folder"))
    if cfg.mqtt.enabled:
        folders.append((mqtt_spool_dir(cfg, events_dir), "MQTT spool folder"))
    if report_dir is not None:
        folders.append((report_dir, "--report folder"))
        if len(names) > 1:
            folders += [(report_dir / name, "--report folder") for name in names]
    problems: List[str] = []
    failed: List[Path] = []
    for path, what in folders:
        path = Path(path)
        if any(bad == path or bad in path.parents for bad in failed):
            continue  # inside a folder that already failed: the same problem again
        problem = folder_problem(path, what)
        if problem:
            problems.append(problem)
            failed.append(path)
    return problems


def raise_problems(problems: Sequence[str]) -> None:
    if not problems:
        return
    if all("is not installed" in p for p in problems):
        raise MissingDependency("\n".join(problems))
    raise EdgeVadError("\n".join(problems))
