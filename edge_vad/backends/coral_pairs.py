"""Which TFLite interpreter builds work with which Coral Edge TPU runtime (libedgetpu), as reported, with sources.

Why pairs matter: libedgetpu is compiled against one TensorFlow Lite source tree and works inside the interpreter
that loads it as a delegate; interpreters far from that tree crash (segfault) or refuse the compiled model.
Coral's last apt release, libedgetpu 16.0 ("grouper", July 2021, Edge TPU runtime 14), is built against
TensorFlow 2.5.0. Community builds (feranick/libedgetpu, Debian packages versioned 16.0tfX.Y.Z) are the same
runtime built against TensorFlow X.Y.Z. PyPI has no libedgetpu (the PyPI project `pycoral` is unrelated).

Sources (each row below names its own):
- Coral, "Run inference on the Edge TPU with Python": https://coral.ai/docs/edgetpu/tflite-python/
- libedgetpu 16.0 is built at TF 2.5.0 (Coral staff): https://github.com/google-coral/edgetpu/issues/731
- pycoral 2.0 requires tflite-runtime==2.5.0.post1: https://github.com/f0cal/google-coral/issues/108
- 16.0 (RuntimeVersion(14)) + tflite_runtime 2.5.0.post1 running: https://github.com/google-coral/edgetpu/issues/660
- "The last version of TensorFlow Lite to support EdgeTPU is 2.11.1. Any later version leads to a segmentation
  fault" (tested to 2.15); community libedgetpu builds for newer TF: https://github.com/google-coral/edgetpu/issues/812
- the same, libedgetpu's tracker: https://github.com/google-coral/libedgetpu/issues/53 and /67;
  tflite_runtime 2.13 segfaults: https://github.com/oberluz/pycoral/issues/13
- libedgetpu 15.0 wants tflite_runtime 2.5, 2.1.0.post1 fails: https://github.com/google-coral/edgetpu/issues/259
- Mendel Eagle's libedgetpu 14.1 with tflite_runtime 2.1.0.post1: https://github.com/tensorflow/tensorflow/issues/34135
- Frigate's image pairs libedgetpu 16.0tf2.17.1 with tflite_runtime 2.17.1 (docker/main/install_deps.sh, 2025)

Stdlib only: deploy/install.sh runs this file as a script with the target Python before anything is installed
(`python3 edge_vad/backends/coral_pairs.py --python 3.11`).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

DPKG_STATUS = Path("/var/lib/dpkg/status")
LIBEDGETPU_PACKAGES = ("libedgetpu1-std", "libedgetpu1-max", "libedgetpu1-legacy-std", "libedgetpu1-legacy-max")
ISSUE_812 = "https://github.com/google-coral/edgetpu/issues/812"
COMMUNITY_ROUTE = ("a community libedgetpu built for a newer TensorFlow (Debian packages 16.0tfX.Y.Z, "
                   "github.com/feranick/libedgetpu/releases) with the tflite_runtime X.Y.Z wheel built for it "
                   "(github.com/feranick/TFlite-builds/releases); neither is on PyPI")

Version = Tuple[int, ...]


def parse_version(text: str) -> Version:
    """'2.5.0.post1' -> (2, 5, 0); '16.0tf2.17.1-1' -> (16, 0)."""
    parts = []
    for piece in re.split(r"[.\-+]", text.strip()):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.group() != piece:
            break
    return tuple(parts)


@dataclass(frozen=True)
class Pair:
    """A libedgetpu build and a range of one interpreter's versions (inclusive; () = open) and what is known."""

    runtime: str  # coral-16.0 | coral-15.0 | coral-14.1 | community (16.0tfX.Y.Z: see `same_tf`)
    interpreter: str  # pip distribution: tflite-runtime | ai-edge-litert
    low: Version
    high: Version
    works: bool
    evidence: str  # documented | reported | inferred
    what: str
    source: str
    same_tf: bool = False  # community rows: the interpreter's major.minor must equal the build's TF

    def covers(self, runtime: str, interpreter: str, version: Version, build_tf: Optional[Version]) -> bool:
        if self.runtime != runtime or self.interpreter != interpreter:
            return False
        if self.same_tf:
            return build_tf is not None and version[:2] == build_tf[:2]
        return (not self.low or version[:len(self.low)] >= self.low) and \
            (not self.high or version[:len(self.high)] <= self.high)


PAIRS: Tuple[Pair, ...] = (
    Pair("coral-16.0", "tflite-runtime", (2, 5), (2, 5), True, "documented",
         "Coral's release: libedgetpu 16.0 with pycoral 2.0, which requires tflite-runtime==2.5.0.post1 (Coral's own "
         "wheels for Python 3.6-3.9, google-coral.github.io/py-repo, not PyPI)",
         "https://coral.ai/docs/edgetpu/tflite-python/ ; https://github.com/f0cal/google-coral/issues/108"),
    Pair("coral-16.0", "tflite-runtime", (2, 6), (2, 11), True, "reported",
         "tflite-runtime up to 2.11.1 runs Coral's libedgetpu 16.0", ISSUE_812),
    Pair("coral-16.0", "tflite-runtime", (2, 12), (), False, "reported",
         "tflite-runtime 2.12 and newer segfault with Coral's libedgetpu 16.0 (built at TF 2.5)",
         ISSUE_812 + " ; https://github.com/google-coral/libedgetpu/issues/53"),
    Pair("coral-16.0", "ai-edge-litert", (), (), False, "inferred",
         "ai-edge-litert is TF Lite published as LiteRT since 2024 (after TF 2.16), and every TF Lite after 2.11 is "
         "reported to segfault with Coral's libedgetpu 16.0 (built at TF 2.5)", ISSUE_812),
    Pair("coral-15.0", "tflite-runtime", (2, 5), (2, 5), True, "reported",
         "Coral staff: libedgetpu 15.0 needs tflite_runtime 2.5", "https://github.com/google-coral/edgetpu/issues/259"),
    Pair("coral-15.0", "tflite-runtime", (2, 1), (2, 4), False, "reported",
         "'Internal: Unsupported data type in custom op handler' with tflite_runtime 2.1.0.post1 and libedgetpu 15.0",
         "https://github.com/google-coral/edgetpu/issues/259"),
    Pair("coral-14.1", "tflite-runtime", (2, 1), (2, 1), True, "reported",
         "Mendel Eagle (Coral Dev Board) ships libedgetpu 14.1 and takes tflite_runtime 2.1.0.post1",
         "https://github.com/tensorflow/tensorflow/issues/34135"),
    Pair("community", "tflite-runtime", (), (), True, "reported",
         "a community libedgetpu 16.0tfX.Y.Z runs tflite_runtime X.Y (Frigate pairs 16.0tf2.17.1 with 2.17.1)",
         ISSUE_812 + " ; Frigate docker/main/install_deps.sh", same_tf=True),
)


@dataclass(frozen=True)
class LibedgetpuBuild:
    """The installed libedgetpu: its label in PAIRS, a readable name, and the TF it was built against if known."""

    runtime: str  # coral-16.0 | coral-15.0 | coral-14.1 | community | unknown
    name: str
    tf: Optional[Version] = None


def installed_package(status_file: Path = DPKG_STATUS) -> Optional[Tuple[str, str]]:
    """(package, version) of the libedgetpu Debian package dpkg lists as installed, or None."""
    try:
        text = status_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for block in text.split("\n\n"):
        fields: Dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(": ")
            if sep and not line.startswith(" "):
                fields[key] = value.strip()
        if fields.get("Package") in LIBEDGETPU_PACKAGES and fields.get("Status", "").endswith(" installed"):
            return fields["Package"], fields.get("Version", "")
    return None


def identify_build(package: Optional[Tuple[str, str]], runtime_number: Optional[int]) -> LibedgetpuBuild:
    """Name the libedgetpu build from its Debian package version, else from edgetpu_version()'s RuntimeVersion."""
    if package is not None:
        name, version = package
        community = re.match(r"^(\d+\.\d+)tf(\d+(?:\.\d+)*)", version)
        if community:
            return LibedgetpuBuild("community", f"libedgetpu {community.group(1)}tf{community.group(2)} ({name}, a "
                                                f"community build at TF {community.group(2)})",
                                   parse_version(community.group(2)))
        short = ".".join(str(p) for p in parse_version(version)[:2])
        if short in ("16.0", "15.0", "14.1"):
            return LibedgetpuBuild(f"coral-{short}", f"libedgetpu {short} ({name}, Coral's apt release)",
                                   (2, 5) if short == "16.0" else None)
        return LibedgetpuBuild("unknown", f"libedgetpu {version} ({name})")
    if runtime_number is not None:
        return LibedgetpuBuild("unknown", f"Edge TPU runtime {runtime_number} (libedgetpu "
                                          f"{'16.0' if runtime_number >= 14 else '15.0 or older'}, not from a Debian "
                                          "package: Coral's or a community build, its TensorFlow unknown)")
    return LibedgetpuBuild("unknown", "libedgetpu of unknown version")


@dataclass(frozen=True)
class Verdict:
    status: str  # works | fails | unknown
    line: str  # one line for the log: the pair, what is known, the source

    @property
    def known_to_work(self) -> bool:
        return self.status == "works"


def check_pair(build: LibedgetpuBuild, interpreter: str, version: str) -> Verdict:
    """What is known about `interpreter` `version` with `build` (PAIRS)."""
    v = parse_version(version)
    pair_name = f"{interpreter} {version} with {build.name}"
    for pair in PAIRS:
        if pair.covers(build.runtime, interpreter, v, build.tf):
            status = "works" if pair.works else "fails"
            known = {"documented": "documented to work", "reported": "reported to work" if pair.works else
                     "reported to fail", "inferred": "expected to fail"}[pair.evidence]
            return Verdict(status, f"{pair_name}: {known}: {pair.what} ({pair.source})")
    return Verdict("unknown", f"{pair_name}: not a pair known to work (edge_vad/backends/coral_pairs.py lists the "
                              f"known ones, {ISSUE_812})")


# -- what the `coral` extra installs per Python, and whether a pair known to work exists on PyPI ------------------
# PyPI, checked with `pip index versions` per Python and platform: tflite-runtime 2.7.0-2.11.0 for CPython 3.7-3.9,
# 2.12-2.14 for 3.8-3.11 (2.14 x86-64 only), nothing for 3.12+; ai-edge-litert 1.x for 3.9-3.12, 2.x for 3.10-3.13;
# all tflite-runtime wheels are built for numpy 1.x.
def pypi_choice(python: Tuple[int, int]) -> Tuple[str, bool, str]:
    """(what the coral extra installs, whether that pairs with Coral's apt libedgetpu 16.0 as known, one line)."""
    if python < (3, 10):
        return ("tflite-runtime 2.11.0 (numpy<2)", True,
                "tflite-runtime 2.11.0, the newest PyPI build reported to run Coral's libedgetpu 16.0 "
                f"({ISSUE_812}); Coral's own 2.5.0.post1 is the documented one")
    return ("ai-edge-litert", False,
            f"no interpreter on PyPI for Python {python[0]}.{python[1]} is known to work with Coral's libedgetpu 16.0 "
            "(tflite-runtime 2.12+ and ai-edge-litert are newer than 2.11); the coral extra installs ai-edge-litert "
            f"(the int8 model on the CPU). For the Edge TPU: Python 3.9 or older (tflite-runtime 2.11.0), or "
            f"{COMMUNITY_ROUTE}")


def _main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Coral Edge TPU runtime / TFLite interpreter pairs")
    parser.add_argument("--python", help="X.Y: what the coral extra installs for that Python (default: this one)")
    parser.add_argument("--check", action="store_true", help="check the interpreter and libedgetpu installed here")
    args = parser.parse_args(argv)
    if args.check:
        from edge_vad.backends.edgetpu_runtime import coral_pair_verdict  # needs the installed runtime

        verdict = coral_pair_verdict()
        print(("OK: " if verdict.known_to_work else "WARNING: ") + verdict.line)
        return 0
    python = tuple(int(p) for p in args.python.split(".")[:2]) if args.python else sys.version_info[:2]
    installs, works, line = pypi_choice((python[0], python[1]))
    print(f"coral extra on Python {python[0]}.{python[1]}: {installs}; "
          f"{'pairs with' if works else 'NOT known to pair with'} Coral's apt libedgetpu 16.0: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
