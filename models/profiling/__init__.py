"""Cost profiling of the TCVADS networks in PyTorch (the `train` extra): time and FLOPs.

- `sequence_cost`: the paper's Fig. 4 analog, the enhanced RWKV head against a Transformer encoder of the same
  width over sequence lengths 250 ... 1750 (time, analytic FLOPs, table, PNG), and the fine stage's budget.
- `fine_budget`: parameters and GFLOPs per snippet pass of the fine stage (random weights, architecture only).
- `vit_tower`: the CLIP ViT-B/16 image tower, from open_clip when it imports, else an equivalent in plain torch.nn
  (same module names, parameters and arithmetic; tests load one's weights into the other).
- `counting`: FLOPs by torch.utils.flop_counter under this project's counting rule; `timing`: device-synchronised
  median timing.

Submodules are imported by name; importing this package imports nothing heavy.
"""
