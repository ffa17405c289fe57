"""Cache of TensorRT engines built on the device (DESIGN.md convention 2).

A serialized engine is only valid for the TensorRT version and the GPU that built it, so
engines are built on the device from the bundle's ONNX and stored under a key of
(onnx sha256, precision, TensorRT version, GPU name). The file name is derived from the key
alone (deterministic, filename-safe); a JSON sidecar holds the full key and the engine's
sha256, and is written last: an engine without a matching sidecar (a different key, a torn
write, a truncated file) is rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

from edge_vad.errors import EdgeVadError
from edge_vad.fileio import atomic_write_bytes, sha256_file  # noqa: F401 (sha256_file: tensorrt_backend imports it from here)

log = logging.getLogger(__name__)

CACHE_ENV = "EDGE_VAD_TRT_CACHE"
PRECISIONS = ("fp32", "fp16", "int8")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_cache_dir() -> Path:
    """$EDGE_VAD_TRT_CACHE, else ~/.cache/edge-vad/trt."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edge-vad" / "trt"


def _slug(text: str, limit: int = 40) -> str:
    return _UNSAFE.sub("-", text).strip("-.")[:limit] or "x"


@dataclass(frozen=True)
class EngineKey:
    """What a serialized engine depends on."""

    onnx_sha256: str
    precision: str
    trt_version: str
    gpu_name: str

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EdgeVadError(f"TensorRT precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise EdgeVadError(f"onnx_sha256 must be 64 lowercase hex digits, found {self.onnx_sha256!r}")

    @property
    def digest(self) -> str:
        """sha256 over all four fields: any change gives another name, even where slugs collide."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    @property
    def filename(self) -> str:
        """e.g. `3f2a9c1b0d4e-fp16-trt8.6.2-Orin-1a2b3c4d5e6f7a8b.engine`: readable, then unique."""
        return (f"{self.onnx_sha256[:12]}-{self.precision}-trt{_slug(self.trt_version, 16)}-"
                f"{_slug(self.gpu_name)}-{self.digest[:16]}.engine")


class EngineCache:
    """Engines on disk under `cache_dir`, one file (+ `.json` sidecar) per EngineKey."""

    def __init__(self, cache_dir: Optional[Union[str, Path]] = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def path_for(self, key: EngineKey) -> Path:
        return self.cache_dir / key.filename

    def _sidecar(self, key: EngineKey) -> Path:
        return self.path_for(key).with_suffix(".json")

    def load(self, key: EngineKey) -> Optional[bytes]:
        """The cached engine for `key`, or None if absent or not provably built for this key."""
        engine_path, sidecar = self.path_for(key), self._sidecar(key)
        if not engine_path.is_file() or not sidecar.is_file():
            return None
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            log.warning("TensorRT cache: unreadable %s; rebuilding", sidecar)
            return None
        if meta.get("key") != asdict(key):
            log.warning("TensorRT cache: %s was built for %s, not %s; rebuilding", engine_path, meta.get("key"), asdict(key))
            return None
        data = engine_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("engine_sha256"):
            log.warning("TensorRT cache: %s does not match its recorded sha256 (torn write?); rebuilding", engine_path)
            return None
        return data

    def store(self, key: EngineKey, engine: bytes) -> Path:
        """Write the engine, then its sidecar (the sidecar is the commit mark)."""
        path = atomic_write_bytes(self.path_for(key), bytes(engine))
        meta = {"key": asdict(key), "engine_sha256": hashlib.sha256(engine).hexdigest()}
        atomic_write_bytes(self._sidecar(key), json.dumps(meta, indent=2, sort_keys=True).encode())
        return path

    def invalidate(self, key: EngineKey) -> None:
        for p in (self._sidecar(key), self.path_for(key)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes], rebuild: bool = False) -> Tuple[bytes, bool]:
        """(engine bytes, whether it was built now). `build` runs only on a miss or when rebuild=True."""
        if not rebuild:
            cached = self.load(key)
            if cached is not None:
                log.info("TensorRT cache: using %s", self.path_for(key))
                return cached, False
        log.info("TensorRT cache: building %s (minutes on a Jetson)", key.filename)
        engine = build()
        self.store(key, engine)
        return engine, True
