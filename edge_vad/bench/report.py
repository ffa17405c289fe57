"""Bench outputs: the terminal table, JSON, Markdown and PNGs (latency bars; the RWKV-vs-Transformer plot).

    first_line(target, detection)          -> the line bench prints before measuring anything
    text_report(result)                    -> the terminal table (plain text)
    write_outputs(result, json_path, dir)  -> {"json": ..., "markdown": ..., "latency_png": ..., "rwkv_png": ...}

Files: <stem>.json (when asked), <stem>.md, <stem>.latency.png and, with RWKV rows, <stem>.rwkv.png, next to
--json, else under benchmarks/results/ with stem bench-<target>. Written to a temporary name and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge_vad.bench.profiles import Detection
from edge_vad.fileio import atomic_target, atomic_write_text

RESULTS_DIR = Path("benchmarks") / "results"
PNG_DPI = 110


def first_line(target: str, detection: Detection) -> str:
    if detection.on_target:
        return f"edge-vad bench: this machine IS the target {target} ({detection.reason})"
    return (f"edge-vad bench: this machine is NOT a {target} ({detection.reason}); static budgets are checked "
            f"against {target}, latency is measured on this machine's best local backend and labelled so")


def _fmt_num(x: Any, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "parameters":
        return f"{x / 1e6:.2f} M"
    if unit == "FLOPs":
        return f"{x / 1e9:.3f} G"
    if unit == "bytes":
        return f"{x / 2**20:.2f} MB"
    if unit == "fraction of ops":
        return f"{x:.0%}"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _verdict(passed: Optional[bool]) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


def _ms(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}"


# Cells shared by the terminal table and the Markdown tables (each lays them out its own way).
def _budget_cells(c: Dict[str, Any]) -> Tuple[str, str, str]:
    """(value, limit, verdict) of one budget check."""
    return _fmt_num(c["value"], c["unit"]), _fmt_num(c["limit"], c["unit"]), _verdict(c["pass"])


def _stage_times(s: Dict[str, Any]) -> Tuple[str, str, str, str]:
    """(cold, p50, p95, p99) in ms of a stage that runs."""
    return _ms(s["cold_ms"]), _ms(s["p50_ms"]), _ms(s["p95_ms"]), _ms(s["p99_ms"])


def _rwkv_cells(row: Dict[str, Any]) -> Tuple[str, str, str, str, str]:
    """(length, RWKV ms, Transformer ms, RWKV GFLOPs, Transformer GFLOPs) of one sweep row."""
    return (str(row["length"]), f"{row['rwkv_ms']:.3f}", f"{row['transformer_ms']:.3f}", f"{row['rwkv_gflops']:.4f}",
            f"{row['transformer_gflops']:.4f}")


def _streaming_cells(row: Dict[str, Any]) -> Tuple[str, ...]:
    """(history, RWKV step ms, window ms, KV ms, state KiB, window KiB, KV KiB) of one streaming row."""
    return (str(row["length"]), f"{row['rwkv_step_ms']:.3f}", f"{row['transformer_window_ms']:.2f}",
            f"{row['transformer_kv_ms']:.3f}", f"{row['rwkv_state_bytes'] / 1024:.0f}",
            f"{row['transformer_window_bytes'] / 1024:.0f}", f"{row['transformer_kv_bytes'] / 1024:.0f}")


def _streaming_lines(st: Dict[str, Any]) -> List[str]:
    if not st.get("rows"):
        return [f"  streaming: skipped ({st.get('skipped') or st.get('error')})"] if st else []
    out = [f"  streaming, per new frame (RWKV step at {st['rows'][-1]['length']} = {st.get('rwkv_step_growth')}x its "
           f"cost at {st['rows'][0]['length']}):",
           f"  {'history':>7} {'rwkv ms':>9} {'window ms':>10} {'KV ms':>8} {'state KiB':>10} {'window KiB':>11} "
           f"{'KV KiB':>8}"]
    for row in st["rows"]:
        cells = _streaming_cells(row)
        out.append(f"  {cells[0]:>7} {cells[1]:>9} {cells[2]:>10} {cells[3]:>8} {cells[4]:>10} {cells[5]:>11} "
                   f"{cells[6]:>8}")
    return out


def budget_lines(budgets: Dict[str, Any]) -> List[str]:
    lines = []
    for name, c in budgets.items():
        value, limit, verdict = _budget_cells(c)
        lines.append(f"  {name:<34} {value:>10} {c['compare']} {limit:<10} {verdict:<5}"
                     + (f" ({c['note']})" if c.get("note") else ""))
    return lines


def text_report(r: Dict[str, Any]) -> str:
    out = [f"host: {r['host_summary']}", f"target: {r['target']} (on target: {'yes' if r['on_target'] else 'no'})", ""]
    out.append("static budgets (counting rule in the JSON, key static.counting_rule):")
    out += budget_lines(r["budgets"]) or ["  (the target has no budgets)"]
    lat = r["latency"]
    out += ["", f"per-stage latency on {lat['backend']} ({lat['label']}), {lat['threads']} thread(s), "
                f"{lat['iterations']} iterations after {lat['warmup']} warm-up:",
            f"  {'stage':<16} {'cold ms':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}  backend"]
    for name, s in r["stages"].items():
        if s["runs"]:
            out.append(f"  {name:<16} " + " ".join(f"{t:>9}" for t in _stage_times(s)) + f"  {s['backend']}")
        else:
            out.append(f"  {name:<16} not run: {s.get('note', '')}")
    c = r["coarse_frame_to_score"]
    out.append(f"  coarse stage, decoded {c['frame_size']} frame -> score: p50 {_ms(c['p50_ms'])} ms = {c['fps']} fps")
    ins = r.get("instructions") or {}
    if ins:
        out.append("  instructions per coarse frame (callgrind): "
                   + (f"{ins['ir_per_frame']:,}" if not ins.get("skipped") else f"skipped ({ins['skipped']})"))
    out += _preroll_lines(r.get("preroll") or {})
    out += _threads_lines(r.get("threads") or {})
    e = r["end_to_end"]
    if e.get("skipped"):
        out += ["", f"end to end: skipped ({e['skipped']})"]
    else:
        out += ["", f"end to end ({e['frames']} frames, {e.get('threads')} runtime threads): {e['fps']} fps = "
                    f"{e.get('fps_vs_coarse')} of the coarse stage's own {e.get('coarse_fps')} fps; decode only "
                    f"{e['decode_fps']} fps; gate duty {e['gate_duty']}; dropped {e['dropped']}; "
                    f"peak RSS {e['peak_rss_mb']} MB"]
        soak = e.get("soak")
        if soak and not soak.get("skipped"):
            out.append(f"  soak {soak['minutes_of_video']} min of video: RSS {soak['rss_start_mb']} -> "
                       f"{soak['rss_end_mb']} MB (growth {soak['rss_growth_mb']} MB)")
    cv = r["cascade_vs_always_on"]
    out.append("")
    if cv.get("skipped"):
        out.append(f"cascade vs always-on, clip-vit-b16: skipped ({cv['skipped']})")
    else:
        out.append(f"cascade vs always-on, {cv.get('encoder')} bundle ({cv.get('weights', '')}):")
        out.append("  " + _cascade_line(cv))
    shipped = cv.get("shipped_bundle")
    if shipped:
        out.append("cascade vs always-on, shipped bundle:")
        out.append("  " + _cascade_line(shipped))
    rv = r["rwkv_vs_transformer"]
    out.append("")
    if rv.get("skipped"):
        out.append(f"RWKV vs Transformer: skipped ({rv['skipped']})")
    else:
        out.append(f"RWKV vs Transformer ({rv.get('device')}): {rv.get('speedup_at_max_length')}x faster at "
                   f"{rv.get('max_length')} steps; RWKV time linear in length R^2 {rv.get('rwkv_time_linearity_r2')}")
        out.append(f"  {'length':>7} {'rwkv ms':>9} {'transf. ms':>11} {'rwkv GF':>9} {'transf. GF':>11}")
        for row in rv["rows"]:
            length, rwkv_ms, tf_ms, rwkv_gf, tf_gf = _rwkv_cells(row)
            out.append(f"  {length:>7} {rwkv_ms:>9} {tf_ms:>11} {rwkv_gf:>9} {tf_gf:>11}")
        out += _streaming_lines(rv.get("streaming") or {})
    ft = r.get("fine_torch_latency", {})
    if ft and not ft.get("skipped"):
        where = ft.get("gpu") or ft["device"]
        out.append(f"fine stage in PyTorch on {where} (random weights): encoder p50 {_ms(ft['fine_encoder']['p50_ms'])}"
                   f" ms, head p50 {_ms(ft['fine_head']['p50_ms'])} ms")
    elif ft:
        out.append(f"fine stage in PyTorch: skipped ({ft['skipped']})")
    return "\n".join(out)


def _preroll_lines(pr: Dict[str, Any]) -> List[str]:
    out = []
    for name, p in pr.items():
        if isinstance(p, dict) and "p50_ms" in p:
            out.append(f"  clip pre-roll per frame read, {name} ({p['ring']['frame_size']} kept, every "
                       f"{p['ring']['stride']} of {p['ring']['frames']} frames, {p['ring']['mib']} MiB): mean "
                       f"{_ms(p['mean_ms'])} ms, a kept frame p50 {_ms(p['kept_frame_p50_ms'])} ms, p99 "
                       f"{_ms(p['p99_ms'])} ms (the former JPEG pre-roll: {_ms(p['former_jpeg_p50_ms'])} ms)")
    return out


def _threads_lines(th: Dict[str, Any]) -> List[str]:
    """One line per swept backend: backbone p50 per thread count, quiet and under load, and the pick."""
    out = []
    for name, b in (th.get("backends") or {}).items():
        if b.get("skipped"):
            out.append(f"  threads, {name}: skipped ({b['skipped']})")
            continue
        cells = ", ".join(f"{n}: {b['p50_ms_quiet'][str(n)]} / {b['p50_ms_loaded'][str(n)]}" for n in b["threads"])
        out.append(f"  threads, {b['artifact']} on {name} (p50 ms quiet / loaded): {cells}; best under load: "
                   f"{b['recommended']}")
    pipe = th.get("pipeline")
    if pipe:
        cells = ", ".join(f"{n}: {fps}" for n, fps in pipe["fps"].items())
        out.append(f"  threads, the whole pipeline (end-to-end fps, runs {pipe['order']}): {cells}; best: "
                   f"{pipe['recommended']}")
    default = th.get("runtime_default")
    if default:
        out.append(f"  runtime default: {default['threads']} thread(s), from the {default['source']}")
    return out


def _cascade_line(cv: Dict[str, Any]) -> str:
    st = cv["stream"]
    text = (f"{st.get('frames')} frames, {st.get('anomalous_fraction')} anomalous: speedup {cv['speedup']}x per "
            f"CPU-second ({cv.get('speedup_wall')}x wall clock), bound {cv.get('bound')}x from the stage costs "
            f"(coarse {cv.get('c_coarse_ms')} ms, fine {cv.get('c_fine_ms')} ms, duty {cv.get('duty')}): "
            f"speedup / bound {cv.get('speedup_over_bound')}")
    if cv.get("auc_cascade") is not None:
        text += (f"; frame AUC cascade {cv['auc_cascade']}, always-on {cv['auc_always_on']} (coarse score alone "
                 f"{cv['auc_coarse_only']})")
    return text


def _md_cascade(lines: List[str], cv: Dict[str, Any]) -> None:
    lines += ["| system | fps (wall) | frames per CPU-second | fine frames | frame AUC |", "|---|---|---|---|---|",
              f"| cascade | {cv['cascade']['fps']} | {cv['cascade'].get('fps_cpu')} | "
              f"{cv['cascade']['fine_fraction']} | {cv['auc_cascade']} |",
              f"| always-on | {cv['always_on']['fps']} | {cv['always_on'].get('fps_cpu')} | "
              f"{cv['always_on']['fine_fraction']} | {cv['auc_always_on']} |",
              "", f"Speedup **{cv['speedup']}x** per CPU-second ({cv.get('speedup_wall')}x wall clock); bound "
                  f"**{cv.get('bound')}x** ({cv.get('bound_definition', '')}: coarse {cv.get('c_coarse_ms')} ms, fine "
                  f"{cv.get('c_fine_ms')} ms, duty {cv.get('duty')}); speedup / bound {cv.get('speedup_over_bound')}. "
                  f"Coarse score alone AUC {cv['auc_coarse_only']}. Stream: {json.dumps(cv['stream'])}"]


def _md_section(lines: List[str], title: str, section: Dict[str, Any]) -> bool:
    """Append a Markdown section heading, and the reason when the section was skipped; True if it has figures."""
    lines += ["", f"## {title}", ""]
    if section.get("skipped"):
        lines.append(f"Skipped: {section['skipped']}")
        return False
    return True


def markdown_report(r: Dict[str, Any]) -> str:
    lines = [f"# edge-vad bench: {r['target']}", "", f"- {r['first_line']}", f"- host: {r['host_summary']}",
             f"- run: `{r['run']['command']}` at {r['run']['started_at']} ({r['run']['duration_s']} s)", "",
             "## Static budgets", "", f"Counting rule: {r['static']['counting_rule']}", "",
             "| check | value | limit | verdict | note |", "|---|---|---|---|---|"]
    for name, c in r["budgets"].items():
        value, limit, verdict = _budget_cells(c)
        lines.append(f"| {name} | {value} | {c['compare']} {limit} | {verdict} | {c.get('note', '')} |")
    lat = r["latency"]
    lines += ["", "## Per-stage latency", "",
              f"{lat['backend']} ({lat['label']}); {lat['threads']} thread(s); {lat['iterations']} iterations after "
              f"{lat['warmup']} warm-up. Cold = load + first inference.", "",
              "| stage | backend | cold ms | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for name, s in r["stages"].items():
        if s["runs"]:
            lines.append(f"| {name} | {s['backend']} | " + " | ".join(_stage_times(s)) + " |")
        else:
            lines.append(f"| {name} | not run | - | - | - | - |")
    c = r["coarse_frame_to_score"]
    lines += ["", f"Coarse stage, decoded {c['frame_size']} frame to score: p50 {_ms(c['p50_ms'])} ms = **{c['fps']} fps**."]
    pr = r.get("preroll") or {}
    if pr:
        lines += ["", "## Clip pre-roll", "", pr.get("how", ""), ""] + [f"- {x.strip()}" for x in _preroll_lines(pr)]
    th = r.get("threads") or {}
    if th:
        lines += ["", "## Intra-op threads", "", th.get("how", ""), ""] + [f"- {x.strip()}" for x in _threads_lines(th)]
    ins = r.get("instructions") or {}
    if ins and _md_section(lines, "Instructions per coarse frame (callgrind)", ins):
        lines += [f"**{ins['ir_per_frame']:,}** instructions per frame ({ins['frame_size']}); {ins['how']}; "
                  f"{ins['valgrind']}, {ins['wall_s']} s."]
    e = r["end_to_end"]
    if _md_section(lines, "End to end", e):
        lines += ["| fps | coarse-only fps | fps / coarse | decode-only fps | gate duty | dropped | peak RSS MB |",
                  "|---|---|---|---|---|---|---|",
                  f"| {e['fps']} | {e.get('coarse_fps')} | {e.get('fps_vs_coarse')} | {e['decode_fps']} | "
                  f"{e['gate_duty']} | {e['dropped']} | {e['peak_rss_mb']} |", "", e["how"]]
        soak = e.get("soak")
        if soak and not soak.get("skipped"):
            lines += ["", f"Soak, {soak['minutes_of_video']} min of video: RSS {soak['rss_start_mb']} MB -> "
                          f"{soak['rss_end_mb']} MB (growth {soak['rss_growth_mb']} MB)."]
    cv = r["cascade_vs_always_on"]
    if _md_section(lines, f"Cascade vs always-on: {cv.get('encoder', 'clip-vit-b16')} bundle", cv):
        lines += [f"Bundle: {cv.get('bundle_source')}; weights: {cv.get('weights')}.", ""]
        _md_cascade(lines, cv)
    shipped = cv.get("shipped_bundle")
    if shipped:
        lines += ["", "## Cascade vs always-on: shipped bundle", ""]
        _md_cascade(lines, shipped)
        lines += ["", f"Scores: {shipped['score_definition']}"]
    rv = r["rwkv_vs_transformer"]
    if _md_section(lines, "Enhanced RWKV vs Transformer (Fig. 4 analog)", rv):
        lines += ["| length | RWKV ms | Transformer ms | RWKV GFLOPs | Transformer GFLOPs |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(_rwkv_cells(x)) + " |" for x in rv["rows"]]
        lines += ["", f"{rv.get('speedup_at_max_length')}x faster at {rv.get('max_length')} steps on {rv.get('device')}; "
                      f"RWKV time vs length R^2 {rv.get('rwkv_time_linearity_r2')}."]
        st = rv.get("streaming") or {}
        lines += ["", "### Streaming: cost per new frame", ""]
        if st.get("rows"):
            lines += ["| history | RWKV step ms | Transformer window ms | Transformer KV ms | RWKV state KiB | "
                      "window KiB | KV cache KiB |", "|---|---|---|---|---|---|---|"]
            lines += ["| " + " | ".join(_streaming_cells(x)) + " |" for x in st["rows"]]
            lines += ["", f"RWKV step at the longest history / at the shortest: {st.get('rwkv_step_growth')}x "
                          f"(window {st.get('transformer_window_growth')}x, KV {st.get('transformer_kv_growth')}x). "
                          f"{st.get('how', '')}"]
        else:
            lines.append(f"Skipped: {st.get('skipped') or st.get('error')}")
    ft = r.get("fine_torch_latency", {})
    if ft and not ft.get("skipped"):
        lines += ["", "## Fine stage in PyTorch", "", f"{ft.get('gpu') or ft['device']}: encoder p50 "
                  f"{_ms(ft['fine_encoder']['p50_ms'])} ms, head p50 {_ms(ft['fine_head']['p50_ms'])} ms. {ft.get('note', '')}"]
    return "\n".join(lines) + "\n"


def latency_png(r: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, s in r["stages"].items() if s["runs"]]
    p50 = [r["stages"][n]["p50_ms"] for n in names]
    p95 = [r["stages"][n]["p95_ms"] for n in names]
    p99 = [r["stages"][n]["p99_ms"] for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    x = range(len(names))
    ax.bar([i - 0.27 for i in x], p50, 0.27, label="p50")
    ax.bar(list(x), p95, 0.27, label="p95")
    ax.bar([i + 0.27 for i in x], p99, 0.27, label="p99")
    ax.set_xticks(list(x), names)
    ax.set_yscale("log")
    ax.set_ylabel("ms per call (log)")
    lat = r["latency"]
    ax.set_title(f"{r['target']}: per-stage latency on {lat['backend']} ({'on target' if r['on_target'] else 'this machine'})",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=PNG_DPI, format="png")
    plt.close(fig)


def rwkv_png(r: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["rwkv_vs_transformer"]["rows"]
    xs = [row["length"] for row in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(xs, [row["rwkv_ms"] for row in rows], "o-", color="C0", label="enhanced RWKV (whole sequence)")
    if all("rwkv_recurrent_ms" in row for row in rows):
        a1.plot(xs, [row["rwkv_recurrent_ms"] for row in rows], "x--", color="C1", label="enhanced RWKV, frame by frame")
    a1.plot(xs, [row["transformer_ms"] for row in rows], "s-", color="C2", label="Transformer encoder")
    a1.set_xlabel("sequence length N")
    a1.set_ylabel("ms per sequence")
    a1.legend(fontsize=8)
    a2.plot(xs, [row["rwkv_gflops"] for row in rows], "o-", color="C0", label="enhanced RWKV")
    a2.plot(xs, [row["transformer_gflops"] for row in rows], "s-", color="C2", label="Transformer encoder")
    a2.set_xlabel("sequence length N")
    a2.set_ylabel("GFLOPs per sequence")
    fig.suptitle(f"Fig. 4 analog ({r['rwkv_vs_transformer'].get('device')})", fontsize=9)
    fig.tight_layout()
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=PNG_DPI, format="png")
    plt.close(fig)


def output_paths(target: str, json_path: Optional[Path], results_dir: Optional[Path] = None) -> Dict[str, Path]:
    if json_path is not None:
        base, stem = json_path.parent, json_path.stem
    else:
        base, stem = (results_dir or Path.cwd() / RESULTS_DIR), f"bench-{target}"
    paths = {"markdown": base / f"{stem}.md", "latency_png": base / f"{stem}.latency.png",
             "rwkv_png": base / f"{stem}.rwkv.png"}
    if json_path is not None:
        paths["json"] = json_path
    return paths


def write_outputs(r: Dict[str, Any], json_path: Optional[Path], results_dir: Optional[Path] = None) -> Dict[str, str]:
    """Write the Markdown, the PNGs and (if asked) the JSON; returns what was written. r['files'] is set first."""
    paths = output_paths(r["target"], json_path, results_dir)
    if not r["rwkv_vs_transformer"].get("rows"):
        paths.pop("rwkv_png")
    r["files"] = {k: str(v) for k, v in paths.items()}
    paths["markdown"].parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths["markdown"], markdown_report(r))
    if any(s["runs"] for s in r["stages"].values()):
        latency_png(r, paths["latency_png"])
    if "rwkv_png" in paths:
        rwkv_png(r, paths["rwkv_png"])
    if "json" in paths:
        atomic_write_text(paths["json"], json.dumps(r, indent=2, sort_keys=False) + "\n")
    return r["files"]
