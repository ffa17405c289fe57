"""Where int8 TFLite results part between architectures: the bundle's int8 backbone on identical int8 inputs.

    python scripts/arm64_int8_probe.py BUNDLE FRAMES OUT.npz [--frames N] [--kernels default,builtin,ref]

Run it on x86-64 and in the arm64 root of scripts/arm64-check.sh (same bundle, same PNG frames), then compare
the two .npz files key by key. Kernel sets (ai-edge-litert OpResolverType): `default` (AUTO: the XNNPACK
delegate where it applies), `builtin` (the optimized built-in kernels, no default delegate), `ref` (TFLite's
reference kernels: portable integer code, about 100x slower). Found with it (issue 12): the inputs are the
same bit for bit, the reference kernels' outputs too, but the default and built-in kernels differ by up to
tens of quanta, so the CPU int8 path cannot hold 1e-4 across architectures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

KERNELS = {"default": "AUTO", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "ref": "BUILTIN_REF"}


def probe(bundle: Path, frames: Path, out: Path, count: int, kernels: list) -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edge_vad.bundle.manifest import load_manifest
    from edge_vad.runtime.preprocess import lookup_table, resize_frame

    manifest = load_manifest(bundle)
    paths = sorted(frames.glob("*.png"))[:count]
    result = {}
    for name in kernels:
        interp = Interpreter(model_path=str(bundle / manifest.artifacts["coarse_backbone_int8"].file), num_threads=1,
                             experimental_op_resolver_type=getattr(OpResolverType, KERNELS[name]))
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        scale, zero_point = inp["quantization"]
        lut = lookup_table(manifest.preprocessing, float(scale), int(zero_point), str(np.dtype(inp["dtype"])))
        outputs = {d["name"]: [] for d in interp.get_output_details()}
        inputs = []
        for path in paths:
            pixels = resize_frame(cv2.imread(str(path), cv2.IMREAD_COLOR), manifest.preprocessing)
            x = np.stack([lut[c][pixels[..., c]] for c in range(3)], axis=-1)[None]  # NHWC
            if tuple(inp["shape"]) != x.shape:
                x = x.transpose(0, 3, 1, 2)
            inputs.append(x)
            interp.set_tensor(inp["index"], np.ascontiguousarray(x))
            interp.invoke()
            for d in interp.get_output_details():
                outputs[d["name"]].append(interp.get_tensor(d["index"]).copy())
        result[f"{name}/input"] = np.stack(inputs)
        result.update({f"{name}/{k}": np.stack(v) for k, v in outputs.items()})
    np.savez_compressed(out, **result)
    print(f"int8 probe: {len(paths)} frames, kernels {kernels} -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("frames", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", dest="count", type=int, default=8)
    ap.add_argument("--kernels", default="default,builtin,ref")
    args = ap.parse_args()
    probe(args.bundle, args.frames, args.out, args.count, args.kernels.split(","))


if __name__ == "__main__":
    main()
