"""edge_vad_models: the TCVADS networks in PyTorch and their training (the `train` extra).

Installed under the import name `edge_vad_models` (folder models/ in the checkout).
Never imported by the on-device runtime (`edge_vad`).
"""
