"""`edge-vad bench --target`: budgets, per-stage latency, end to end, and the cascade against always-on.

Modules, one job each: profiles (target TOMLs + detection), static_budgets, latency, stream (the video, its
labels, decode-only fps, dilution), child + subproc (a measured runtime run in its own process), end_to_end
(+ soak), cascade, torch_sections (RWKV vs Transformer, fine stage in PyTorch), report (terminal, JSON,
Markdown, PNG), assert_ref (--assert), suite (everything in order). Nothing here imports torch at module level.
"""
