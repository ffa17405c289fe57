"""The paper-faithful cascade, RUN: a clip-vit-b16 bundle for bench's cascade-vs-always-on section.

The shipped fine stage (lite0-minilm) reuses the coarse backbone's trunk feature, so gating it saves almost
nothing (its fine head is 0.3 ms a frame); the paper's fine stage runs a CLIP ViT-B/16 image tower, which is
what gating is for. CLIP weights cannot be downloaded here, and latency does not depend on weight values, so
bench exports a clip-vit-b16 bundle with RANDOM weights (edge_vad_models.profiling.random_clip: the shipped
coarse checkpoint, a random CLIP of open_clip's ViT-B-16 config, a random fine head) once, caches it, and runs
the cascade and always-on systems on it like any bundle. Its AUCs are meaningless and are not reported.

    bundle, how = cascade_bundle(given=None, progress=print)    # (None, why) where it cannot be had

Where: `--cascade-bundle DIR` (any clip-vit-b16 bundle, e.g. with real weights), else the cache
($EDGE_VAD_BENCH_CACHE, default ~/.cache/edge-vad/bench/), else built there when the train and export extras
are installed (a few minutes; about 350 MB), else skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

from edge_vad.bundle import MANIFEST_NAME, verify_bundle
from edge_vad.errors import EdgeVadError

CACHE_ENV = "EDGE_VAD_BENCH_CACHE"
BUNDLE_NAME = "clip-vit-b16-random-v1"  # bump when the recipe changes (cached bundles are then rebuilt)
ENCODER = "clip-vit-b16"
NEEDS = ("torch", "open_clip", "onnx", "edge_vad_models", "edge_vad_export")
WEIGHTS_LABEL = ("RANDOM weights (CLIP ViT-B/16 of open_clip's config, fine head and text table; the coarse stage "
                 "is the shipped checkpoint): latency is the architecture's, scores and AUC mean nothing")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "edge-vad" / "bench")


def _fine_encoder(bundle: Path) -> Optional[str]:
    manifest = verify_bundle(bundle).manifest
    return manifest.fine.encoder if manifest.fine is not None else None


def cascade_bundle(given: Optional[Path], progress: Callable[[str], Any]) -> Tuple[Optional[Path], str]:
    """(bundle, where it came from) or (None, why there is none). A given bundle must be clip-vit-b16."""
    if given is not None:
        if _fine_encoder(Path(given)) != ENCODER:
            raise EdgeVadError(f"--cascade-bundle {given}: not a {ENCODER} bundle; export one with --fine-encoder "
                               f"{ENCODER} --clip-checkpoint PATH", exit_code=2)
        return Path(given), f"--cascade-bundle {given}"
    final = cache_dir() / BUNDLE_NAME
    if (final / MANIFEST_NAME).is_file():
        try:
            if _fine_encoder(final) == ENCODER:
                return final, f"cached random-weight bundle {final}"
        except EdgeVadError as exc:
            progress(f"cached {final} is damaged ({exc}); rebuilding it")
        shutil.rmtree(final, ignore_errors=True)
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        return None, (f"no {ENCODER} bundle: building one with random weights needs the train and export extras "
                      f"({', '.join(missing)} missing); pass --cascade-bundle DIR or install them")
    progress(f"exporting a {ENCODER} bundle with random weights into {final} (once; a few minutes)")
    build_random_bundle(final)
    return final, f"random-weight bundle built into {final}"


def build_random_bundle(final: Path, clip_cfg: Optional[dict] = None) -> Path:
    """Export the random clip-vit-b16 bundle into `final` (atomically: built beside it, then renamed)."""
    from edge_vad.cli.export_cmd import run_export
    from edge_vad_models.profiling.random_clip import write_random_clip_checkpoint

    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{final.name}.", dir=final.parent) as tmp:
        ckpt, out = Path(tmp) / "checkpoint", Path(tmp) / "bundle"
        weights = write_random_clip_checkpoint(ckpt, clip_cfg)
        run_export(str(ckpt), "onnx", None, out, True, ENCODER, weights)
        os.replace(out, final)
    return final
