"""Target profiles of `edge-vad bench`, one TOML file per board (package data; read by edge_vad.bench.profiles)."""
