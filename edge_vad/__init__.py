"""edge-vad: the TCVADS video anomaly detector as an edge runtime (Jetson / Coral).

This package is the on-device runtime and the CLI. It never imports torch; the PyTorch
networks live in `edge_vad_models` (folder models/) and the export toolchain in
`edge_vad_export` (folder export/), both behind the `train` / `export` extras.
"""

__version__ = "0.1.0"
