"""edge_vad_export: the export toolchain (PyTorch -> ONNX / full-int8 TFLite / bundle).

Installed under the import name `edge_vad_export` (folder export/ in the checkout).
Needs the `train` and `export` extras; never imported by the on-device runtime.
"""
