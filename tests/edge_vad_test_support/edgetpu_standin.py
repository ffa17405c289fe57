"""A stand-in for Google's `edgetpu_compiler` (x86-64 Debian/Ubuntu only, from Coral's apt repository; not
installable here). `install_compiler(bin_dir, mode)` writes an executable `edgetpu_compiler` that behaves as the
real one is documented and seen to behave:

- options as in Coral's "Edge TPU Compiler" page (https://coral.ai/docs/edgetpu/compiler/): -o/--out_dir,
  -s/--show_operations, -m/--min_runtime_version, -t/--timeout_sec, -v/--version; several models are co-compiled
  in one run; the outputs are `<input stem>_edgetpu.tflite` and `<input stem>_edgetpu.log` in --out_dir;
- its console report and log in the real format, line for line as compiler 16.0.384591198 prints them in
  google-coral/edgetpu issues #427 (partial mapping), #458 (co-compiled), #572 (full mapping), #671, and the log
  file in #60 / the efficientdet log quoted in tests/runtime/test_edgetpu_compile.py;
- the operations it reports are the model file's own (counted from its flatbuffer, as the compiler reads it);
- the compiled file is the input plus the `edgetpu-custom-op` marker (a real one replaces the mapped ops by that
  custom op); a model with nothing mapped gets no marker;
- failures as reported in issues #189/#211 ("Internal compiler error. Aborting!") and #168/#313 ("Invalid model:
  X" / "Model not quantized"). Coral documents no exit codes: the stand-in exits 1 for the first and 0 for the
  second, so a caller must read the report, not only the exit status.

Modes: full | partial (MEAN and FULLY_CONNECTED stay on the CPU) | none (nothing mapped) | internal-error |
not-quantized.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

VERSION = "16.0.384591198"  # Coral's last compiler release (apt package edgetpu-compiler 16.0)
MODES = ("full", "partial", "none", "internal-error", "not-quantized")

_SCRIPT = r'''
import os, shutil, sys, time
MODE = {mode!r}
VERSION = {version!r}
MAPPED = "Mapped to Edge TPU"
PARTIAL_REASONS = {{"MEAN": "Operation is otherwise supported, but not mapped due to some unspecified limitation",
                    "FULLY_CONNECTED": "More than one subgraph is not supported"}}
NOT_MAPPED = "Operation is working on an unsupported data type"
PARTIAL_NOTE = ("Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of "
                "the model will instead run on the CPU, which is slower. If possible, consider updating your model to "
                "use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.")


def size(n):
    for unit, scale in (("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= scale:
            return "%.2f%s" % (n / scale, unit)
    return "%.2fB" % n


def table(rows):
    return ["Operator                       Count      Status", ""] + ["%-31s%-11d%s" % r for r in rows]


args = sys.argv[1:]
out_dir, show, models = ".", False, []
while args:
    a = args.pop(0)
    if a in ("-v", "--version"):
        print("Edge TPU Compiler version " + VERSION)
        sys.exit(0)
    if a in ("-o", "--out_dir"):
        out_dir = args.pop(0)
    elif a.startswith("--out_dir="):
        out_dir = a.split("=", 1)[1]
    elif a in ("-s", "--show_operations"):
        show = True
    elif a in ("-m", "--min_runtime_version", "-t", "--timeout_sec"):
        args.pop(0)
    elif a.startswith("-"):
        print("ERROR: Unknown command line flag '%s'" % a.lstrip("-"), file=sys.stderr)
        sys.exit(1)
    else:
        models.append(a)
print("Edge TPU Compiler version " + VERSION)
print("Started a compilation timeout timer of 180 seconds.")
if not models:
    print("ERROR: No input models given.")
    sys.exit(1)
if MODE == "internal-error":
    print("")
    print("Internal compiler error. Aborting!")
    sys.exit(1)
if MODE == "not-quantized":
    print("Invalid model: " + models[0])
    print("Model not quantized")
    sys.exit(0)
from edge_vad_export.tflite_model import op_histogram
start = time.time()
sections = []
for path in models:
    hist = op_histogram(path)
    rows = []
    for op, count in hist.items():
        if MODE == "none":
            rows.append((op, count, NOT_MAPPED))
        elif MODE == "partial" and op in PARTIAL_REASONS:
            rows.append((op, count, PARTIAL_REASONS[op]))
        else:
            rows.append((op, count, MAPPED))
    total = sum(hist.values())
    on_cpu = sum(c for _, c, s in rows if s != MAPPED)
    stem = os.path.splitext(os.path.basename(path))[0]
    out = os.path.join(out_dir, stem + "_edgetpu.tflite")
    log = os.path.join(out_dir, stem + "_edgetpu.log")
    data = open(path, "rb").read()
    with open(out, "wb") as fh:
        fh.write(data + (b"" if on_cpu == total else b"edgetpu-custom-op"))
    with open(log, "w") as fh:
        fh.write("\n".join(["Edge TPU Compiler version " + VERSION, "Input: " + path, "Output: " + out, ""] + table(rows)) + "\n")
    params = int(len(data) * 0.94)
    lines = ["Input model: " + path, "Input size: " + size(len(data)), "Output model: " + out,
             "Output size: " + size(len(data) + 17),
             "On-chip memory used for caching model parameters: " + size(params),
             "On-chip memory remaining for caching model parameters: " + size(8 * 1024 ** 2 - params),
             "Off-chip memory used for streaming uncached model parameters: 0.00B",
             "Number of Edge TPU subgraphs: %d" % (0 if on_cpu == total else 1),
             "Total number of operations: %d" % total, "Operation log: " + log]
    if on_cpu:
        lines += ["", PARTIAL_NOTE, "Number of operations that will run on Edge TPU: %d" % (total - on_cpu),
                  "Number of operations that will run on CPU: %d" % on_cpu]
    lines += [""] + (table(rows) if show else ["See the operation log file for individual operation details."])
    sections.append(lines)
print("")
print("Model%s compiled successfully in %d ms." % ("s" if len(models) > 1 else "", int((time.time() - start) * 1000) + 1))
for lines in sections:
    print("")
    print("\n".join(lines))
print("Compilation child process completed within timeout period.")
print("Compilation succeeded!")
'''


def install_compiler(bin_dir: Path, mode: str = "full") -> Path:
    """Write the stand-in as `bin_dir/edgetpu_compiler` (run by this interpreter); returns its path."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {MODES}")
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "edgetpu_compiler"
    path.write_text(f"#!{sys.executable}\n" + _SCRIPT.format(mode=mode, version=VERSION))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def path_with(bin_dir: Path) -> str:
    """PATH with `bin_dir` first."""
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


LIBEDGETPU_SOURCE = Path(__file__).with_name("libedgetpu_standin.c")
TPUS_ENV = "EDGE_VAD_STANDIN_TPUS"  # the Edge TPUs the stand-in library "finds": "usb:/sys/...,pci:/dev/apex_0"


def build_libedgetpu(folder: Path) -> Path:
    """Compile libedgetpu_standin.c into `folder/libedgetpu.so.1` (pytest.skip without a C compiler)."""
    import shutil
    import subprocess

    import pytest

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) to build the libedgetpu stand-in")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "libedgetpu.so.1"
    if not out.is_file():
        subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(LIBEDGETPU_SOURCE)], check=True,
                       capture_output=True, text=True)
    return out
