"""`edge-vad models build-engines`: build, check and cache every TensorRT engine of a bundle ahead of time, so the
service's first start finds them in the cache (docs/jetson.md, "First start"). It loads each TensorRT stage
exactly as `run` does (same plan, same options, same cache key), then closes it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from edge_vad.backends import get_backend
from edge_vad.bundle import resolve_bundle_dir, verify_bundle
from edge_vad.config import load_config, with_precision
from edge_vad.errors import EdgeVadError
from edge_vad.runtime.backend_plan import plan_backends
from edge_vad.runtime.loaded_models import loadable_file

log = logging.getLogger("edge_vad.engines")


@dataclass
class EngineBuild:
    artifact: str
    precision: str
    engine: Path
    built_now: bool
    seconds: Optional[float] = None
    checks: List[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.built_now:
            return f"{self.artifact}: {self.precision} engine already cached at {self.engine}"
        checked = f"; matches the reference ({'; '.join(self.checks)})" if self.checks else "; no reference to check"
        return f"{self.artifact}: {self.precision} engine built in {self.seconds or 0:.0f} s{checked}; cached at {self.engine}"


def build_engines(bundle: Optional[Path] = None, precision: Optional[str] = None, config: Optional[Path] = None,
                  rebuild: bool = False) -> List[EngineBuild]:
    cfg = with_precision(load_config(config), precision)
    bundle_dir = resolve_bundle_dir(bundle or cfg.runtime.bundle)
    manifest = verify_bundle(bundle_dir).manifest
    if not any(t.tensorrt is not None for t in manifest.targets.values()):
        raise EdgeVadError(f"bundle {bundle_dir} has no tensorrt target; re-export it with --targets onnx,tensorrt")
    plan = plan_backends(manifest, bundle_dir, "tensorrt", cfg.runtime, fine=cfg.fine.enabled)
    done = []
    for stage in (s for s in plan.stages if s.backend == "tensorrt"):
        backend = get_backend("tensorrt")
        backend.load(loadable_file(stage, manifest), **dict(stage.options), rebuild=rebuild)
        try:
            done.append(EngineBuild(manifest.artifacts[stage.artifact].file, backend.precision, backend.engine_path,
                                    backend.built_now, backend.build_seconds, [r.describe() for r in backend.checks]))
            log.info("%s", done[-1].describe())
        finally:
            backend.close()
    return done
