"""Target profiles (`edge_vad/bench/targets/<name>.toml`) and whether this machine is that target.

    profile = load_profile("jetson-nano")            # EdgeVadError (exit 2) for an unknown name or a bad file
    det = detect(profile)                            # Detection(on_target=False, reason="...")
    det = detect(profile, root=tmp_path)             # tests: a fake / with proc/device-tree/model etc.

Detection reads files, never runs tools (lsusb may be missing on a board): the device-tree model string
(`/proc/device-tree/model`), device nodes that must exist (`/dev/apex_0`), and USB vendor:product ids from
sysfs (`/sys/bus/usb/devices/*/idVendor`, `idProduct`), all under `root`. A profile matches when ANY of its
rules matches; `always = true` (the host profile) matches everywhere.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_vad.compat import package_dir
from edge_vad.errors import EdgeVadError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILE_PACKAGE = "edge_vad.bench.targets"
BAD_INPUT_EXIT = 2  # unknown target, bad profile: one line and exit code 2 (the rule for bad input)
DEVICE_TREE_MODEL = "proc/device-tree/model"
USB_DEVICES = "sys/bus/usb/devices"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileBudgets(_Strict):
    max_params: Optional[int] = Field(default=None, gt=0)  # per forward pass
    max_flops: Optional[int] = Field(default=None, gt=0)  # per forward pass, FLOPs = 2 x MACs
    max_model_bytes: Optional[int] = Field(default=None, gt=0)  # per model file the board loads
    all_ops_on_tpu: bool = False  # every op of the int8 models supported by the Edge TPU
    max_peak_rss_mb: Optional[float] = Field(default=None, gt=0)  # peak RSS of the runtime on the stream
    source: str = Field(min_length=1)  # where the numbers come from


class DetectRules(_Strict):
    always: bool = False
    device_tree_model: List[str] = []  # substrings of /proc/device-tree/model
    paths: List[str] = []  # absolute paths that exist only on the board (device nodes)
    usb_ids: List[str] = Field(default=[], description="vendor:product, lower-case hex")


class ReferenceInfo(_Strict):
    measured: bool
    note: str = ""


class ProfileRuntime(_Strict):
    """Runtime defaults for the board (used by `edge-vad run` when the config leaves them unset)."""

    threads: int = Field(ge=1)  # intra-op threads of the CPU backends
    threads_source: str = Field(min_length=1)  # the measurement it was chosen from (or why none was possible)


class TargetProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9-]+$")
    description: str
    preferred_backends: List[str] = Field(min_length=1)
    budgets: ProfileBudgets
    detect: DetectRules
    reference: ReferenceInfo
    runtime: ProfileRuntime


@dataclass(frozen=True)
class Detection:
    on_target: bool
    reason: str  # what matched, or what was looked for and not found


def _targets_dir() -> Path:
    return package_dir(PROFILE_PACKAGE)


def target_names() -> List[str]:
    return sorted(p.stem for p in _targets_dir().glob("*.toml"))


def parse_profile(data: dict, origin: str) -> TargetProfile:
    try:
        profile = TargetProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise EdgeVadError(f"{origin}: {loc}: {err['msg']}; fix the target profile", exit_code=BAD_INPUT_EXIT) from None
    return profile


def load_profile(name: str, directory: Optional[Path] = None) -> TargetProfile:
    """The profile called `name` (a file <name>.toml in `directory`, default the shipped targets)."""
    directory = directory or _targets_dir()
    path = directory / f"{name}.toml"
    if not name or "/" in name or not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.toml"))
        raise EdgeVadError(f"unknown target {name!r}; choose one of {', '.join(known)}", exit_code=BAD_INPUT_EXIT)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise EdgeVadError(f"{path}: not valid TOML ({exc}); fix the target profile", exit_code=BAD_INPUT_EXIT) from None
    profile = parse_profile(data, str(path))
    if profile.name != name:
        raise EdgeVadError(f"{path}: name = {profile.name!r} but the file is {name}.toml; make them agree",
                           exit_code=BAD_INPUT_EXIT)
    return profile


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def device_tree_model(root: Path = Path("/")) -> Optional[str]:
    """The board's model string from the device tree (Jetson, Coral Dev Board), None where there is none."""
    return _read_text(root / DEVICE_TREE_MODEL)


def usb_ids(root: Path = Path("/")) -> List[str]:
    """vendor:product of every USB device sysfs lists under root (empty where there is no sysfs)."""
    found = []
    base = root / USB_DEVICES
    if not base.is_dir():
        return found
    for dev in sorted(base.iterdir()):
        vendor, product = _read_text(dev / "idVendor"), _read_text(dev / "idProduct")
        if vendor and product:
            found.append(f"{vendor.lower()}:{product.lower()}")
    return found


def detect(profile: TargetProfile, root: Path = Path("/")) -> Detection:
    """Is the machine whose file system is at `root` the profile's board? (See module doc.)"""
    rules = profile.detect
    if rules.always:
        return Detection(True, f"the {profile.name} profile describes whatever machine runs bench")
    model = device_tree_model(root)
    for wanted in rules.device_tree_model:
        if model and wanted in model:
            return Detection(True, f"/{DEVICE_TREE_MODEL} reads {model!r}")
    for p in rules.paths:
        if (root / p.lstrip("/")).exists():
            return Detection(True, f"{p} exists")
    if rules.usb_ids:
        ids = usb_ids(root)
        hit = sorted(set(ids) & {u.lower() for u in rules.usb_ids})
        if hit:
            return Detection(True, f"USB device {hit[0]} is attached")
    looked = []
    if rules.device_tree_model:
        looked.append(f"/{DEVICE_TREE_MODEL} {'reads ' + repr(model) if model else 'is absent'}, not "
                      + " / ".join(repr(m) for m in rules.device_tree_model))
    if rules.paths:
        looked.append(f"no {', '.join(rules.paths)}")
    if rules.usb_ids:
        looked.append(f"no USB device {' or '.join(rules.usb_ids)}")
    return Detection(False, "; ".join(looked) or "the profile has no detection rule")
