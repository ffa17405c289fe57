"""Coral's Edge TPU runtime library (libedgetpu) as the runtime sees it: where it is, its version, the Edge TPUs
it finds, and its TFLite delegate.

- The library: `libedgetpu.so.1` (pycoral's EDGETPU_SHARED_LIB per platform), from Coral's apt package
  libedgetpu1-std / -max or a community build; `EDGE_VAD_EDGETPU_LIBRARY=/path/to/libedgetpu.so.1` points at one
  outside the loader's path.
- Its C API (edgetpu_c.h, google-coral/libedgetpu tflite/public/edgetpu_c.h): `edgetpu_version()` returns e.g.
  "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted), RuntimeVersion(14)";
  `edgetpu_list_devices(size_t*)` returns an array of {enum type (APEX_PCI = 0, APEX_USB = 1), const char* path},
  freed with `edgetpu_free_devices`. Called through ctypes; loading the library opens no device.
- Without the library, sysfs still shows the hardware: the USB Accelerator is 1a6e:089a until the runtime loads its
  firmware and 18d1:9302 after; the PCIe/M.2 modules are PCI 1ac1:089a and appear as /dev/apex_N once Coral's
  gasket/apex driver is loaded (coral.ai/docs/accelerator/get-started, coral.ai/docs/m2/get-started).
- The delegate: `load_delegate('libedgetpu.so.1', {'device': 'usb:0'})` as pycoral's make_interpreter does. With no
  Edge TPU the library's tflite_plugin_create_delegate returns NULL and the interpreter raises
  `ValueError: Failed to load delegate from libedgetpu.so.1` (checked with Coral's own libedgetpu build and
  ai-edge-litert 2.3). Opening a delegate opens the device (a USB Accelerator also gets its firmware then), so
  the delegate that backend selection loads to see whether the Edge TPU works is kept and handed to the first
  interpreter that asks (`take_delegate`), instead of opening the device a second time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from edge_vad.backends.coral_pairs import DPKG_STATUS, LibedgetpuBuild, Verdict, check_pair, identify_build, installed_package
from edge_vad.errors import EdgeVadError, MissingDependency

LIBRARY_ENV = "EDGE_VAD_EDGETPU_LIBRARY"
# pycoral's EDGETPU_SHARED_LIB per platform
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
    platform.system(), "libedgetpu.so.1")
CORAL_RUNTIME_HINT = ("the Coral Edge TPU runtime is not installed (no {lib}); install libedgetpu1-std from Coral's apt "
                      "repository (coral-edgetpu-stable), then replug the accelerator")
USB_IDS = {"1a6e:089a": "firmware not loaded yet (the runtime loads it on first use)", "18d1:9302": "ready"}
PCI_ID = ("0x1ac1", "0x089a")  # vendor, device of the PCIe / M.2 Edge TPU
_DEVICE_TYPES = {0: "pci", 1: "usb"}  # enum edgetpu_device_type
_RUNTIME_RE = re.compile(r"RuntimeVersion\((\d+)\)")
_DEVICE_RE = re.compile(r"^(usb|pci)?(:\d+)?$")  # pycoral's device strings: ':N', 'usb', 'usb:N', 'pci', 'pci:N'


def validate_edgetpu_device(device: Optional[str]) -> Optional[str]:
    """Check a pycoral-style device string ('usb', 'usb:0', 'pci', 'pci:0', ':0') or None (any TPU)."""
    if device is None:
        return None
    if not isinstance(device, str) or not device or not _DEVICE_RE.match(device):
        raise EdgeVadError(f"edgetpu device {device!r} is not valid; use 'usb', 'usb:0', 'pci', 'pci:0' or ':0' (as pycoral does)")
    return device


def library_name() -> str:
    """What to load: $EDGE_VAD_EDGETPU_LIBRARY, else the platform's libedgetpu name (found by the loader)."""
    return os.environ.get(LIBRARY_ENV) or EDGETPU_LIBRARY


def edgetpu_library_path() -> Optional[str]:
    """Where the Edge TPU library is, or None. Looks it up, then tries loading it."""
    name = library_name()
    if name != EDGETPU_LIBRARY:
        return name if Path(name).is_file() else None
    found = ctypes.util.find_library("edgetpu")
    if found:
        return found
    try:
        ctypes.CDLL(name)
    except OSError:
        return None
    return name


class _Device(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("path", ctypes.c_char_p)]


def _library() -> Optional[ctypes.CDLL]:
    path = edgetpu_library_path()
    if path is None:
        return None
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


def runtime_version() -> Optional[str]:
    """edgetpu_version() of the installed library ("BuildLabel(...), RuntimeVersion(14)"), or None."""
    lib = _library()
    fn = getattr(lib, "edgetpu_version", None) if lib is not None else None
    if fn is None:
        return None
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    raw = fn()
    return raw.decode("utf-8", "replace") if raw else None


def runtime_number(version: Optional[str]) -> Optional[int]:
    """The N of 'RuntimeVersion(N)' (14 = libedgetpu 16.0; 13 = 14.1 and 15.0)."""
    match = _RUNTIME_RE.search(version or "")
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class EdgeTpuDevice:
    name: str  # pycoral's device string: usb:0, pci:1
    path: str  # the library's path for it, or the sysfs / /dev entry
    note: str = ""


def _devices_from_library(lib: ctypes.CDLL) -> Optional[List[EdgeTpuDevice]]:
    list_fn, free_fn = getattr(lib, "edgetpu_list_devices", None), getattr(lib, "edgetpu_free_devices", None)
    if list_fn is None or free_fn is None:
        return None
    list_fn.restype = ctypes.POINTER(_Device)
    list_fn.argtypes = [ctypes.POINTER(ctypes.c_size_t)]
    free_fn.restype = None
    free_fn.argtypes = [ctypes.POINTER(_Device)]
    count = ctypes.c_size_t(0)
    array = list_fn(ctypes.byref(count))
    found: List[EdgeTpuDevice] = []
    seen: Dict[str, int] = {}
    try:
        for i in range(count.value if array else 0):
            kind = _DEVICE_TYPES.get(array[i].type, f"type{array[i].type}")
            index = seen.get(kind, 0)
            seen[kind] = index + 1
            found.append(EdgeTpuDevice(f"{kind}:{index}", (array[i].path or b"").decode("utf-8", "replace")))
    finally:
        if array:
            free_fn(array)
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text().strip().lower()
    except OSError:
        return ""


def devices_from_sysfs(root: Path = Path("/")) -> List[EdgeTpuDevice]:
    """Edge TPUs the kernel shows under `root` (no library needed): Coral USB ids, /dev/apex_N, PCI 1ac1:089a."""
    found: List[EdgeTpuDevice] = []
    usb = root / "sys/bus/usb/devices"
    for dev in sorted(usb.iterdir()) if usb.is_dir() else []:
        ident = f"{_read(dev / 'idVendor')}:{_read(dev / 'idProduct')}"
        if ident in USB_IDS:
            found.append(EdgeTpuDevice(f"usb:{sum(d.name.startswith('usb') for d in found)}", str(dev),
                                       f"{ident}, {USB_IDS[ident]}"))
    apex = sorted((root / "dev").glob("apex_*")) if (root / "dev").is_dir() else []
    for node in apex:
        found.append(EdgeTpuDevice(f"pci:{sum(d.name.startswith('pci') for d in found)}", str(node), "apex driver loaded"))
    pci = root / "sys/bus/pci/devices"
    if not apex and pci.is_dir():
        for dev in sorted(pci.iterdir()):
            if (_read(dev / "vendor"), _read(dev / "device")) == PCI_ID:
                found.append(EdgeTpuDevice(f"pci:{sum(d.name.startswith('pci') for d in found)}", str(dev),
                                           "no /dev/apex_N: install Coral's gasket-dkms driver"))
    return found


def list_devices(root: Path = Path("/")) -> Tuple[List[EdgeTpuDevice], str]:
    """(Edge TPUs, how they were found): libedgetpu's own enumeration where the library is here, else sysfs."""
    lib = _library() if root == Path("/") else None
    if lib is not None:
        devices = _devices_from_library(lib)
        if devices is not None:
            return devices, "libedgetpu (edgetpu_list_devices)"
    return devices_from_sysfs(root), "sysfs (no libedgetpu to ask)"


# -- the delegate ---------------------------------------------------------------------------------------------
_parked: Dict[str, Any] = {}  # device string ('' = any) -> a delegate loaded by probe_delegate, not yet used
_parked_lock = threading.Lock()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def make_edgetpu_delegate(device: Optional[str], load_delegate: Callable[..., Any]) -> Any:
    """Load the Edge TPU delegate for `device` with the interpreter module's `load_delegate`; one EdgeVadError line
    (exit code 3) when the library or the device is missing."""
    device = validate_edgetpu_device(device)
    if edgetpu_library_path() is None:
        raise EdgeVadError(CORAL_RUNTIME_HINT.format(lib=EDGETPU_LIBRARY), exit_code=MissingDependency.exit_code)
    try:
        return load_delegate(library_name(), {"device": device} if device else {})
    except ValueError as exc:  # what load_delegate raises when the library finds no TPU
        where = f"at '{device}'" if device else "on USB or PCIe"
        raise EdgeVadError(f"no Edge TPU found {where} ({_one_line(exc)}); plug the Coral accelerator in "
                           "(lsusb lists 1a6e:089a or 18d1:9302) or pick another device",
                           exit_code=MissingDependency.exit_code) from None


def probe_delegate(device: Optional[str], load_delegate: Callable[..., Any]) -> Optional[str]:
    """None when the delegate loads (it is kept for the first interpreter: see take_delegate), else why not."""
    try:
        delegate = make_edgetpu_delegate(device, load_delegate)
    except EdgeVadError as exc:
        return str(exc)
    with _parked_lock:
        _parked[device or ""] = delegate
    return None


def take_delegate(device: Optional[str], load_delegate: Callable[..., Any]) -> Any:
    """The delegate probe_delegate loaded for `device` if it is still unused, else a new one."""
    with _parked_lock:
        parked = _parked.pop(device or "", None)
    return parked if parked is not None else make_edgetpu_delegate(device, load_delegate)


def release_probed() -> None:
    """Drop delegates the probe loaded that no interpreter took (closes their device)."""
    with _parked_lock:
        _parked.clear()


# -- which interpreter drives the delegate, and whether that pair is known to work ---------------------------------
INTERPRETERS = (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"))  # import name, pip name
_RANK = {"works": 0, "unknown": 1, "fails": 2}


def _find(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def interpreter_version(module: str, dist: str) -> str:
    """The pip version of an interpreter package; its __version__ where pip has no record (Mendel's apt package)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))
    except Exception:  # noqa: BLE001 - a broken install reads as "unknown"; loading it reports the real error
        return "unknown"


def installed_interpreters() -> List[Tuple[str, str, str]]:
    """(import name, pip name, version) of every TFLite interpreter package installed and usable here."""
    found = []
    for module, dist in INTERPRETERS:
        if not _find(module):
            continue
        if module == "tflite_runtime":
            import numpy as np

            if int(np.__version__.split(".")[0]) >= 2:
                continue  # every tflite-runtime wheel is built for numpy 1.x
        found.append((module, dist, interpreter_version(module, dist)))
    return found


def libedgetpu_build(status_file: Path = DPKG_STATUS) -> LibedgetpuBuild:
    """The installed libedgetpu, named from its Debian package (else from edgetpu_version())."""
    return identify_build(installed_package(status_file), runtime_number(runtime_version()))


def edgetpu_interpreter(status_file: Path = DPKG_STATUS) -> Tuple[Optional[str], Verdict]:
    """(interpreter import name, verdict) for the Edge TPU: of the interpreters installed here, the one whose pair
    with the installed libedgetpu is best known (works, else unknown, else fails); (None, why) with none."""
    build = libedgetpu_build(status_file)
    options = [(module, check_pair(build, dist, version)) for module, dist, version in installed_interpreters()]
    if not options:
        return None, Verdict("fails", "no TFLite interpreter is installed (pip install 'edge-vad[coral]')")
    return min(options, key=lambda o: _RANK[o[1].status])


def coral_pair_verdict(status_file: Path = DPKG_STATUS) -> Verdict:
    """The verdict of the interpreter the Edge TPU backend would use here (or: there is no libedgetpu)."""
    if edgetpu_library_path() is None and installed_package(status_file) is None:
        return Verdict("unknown", CORAL_RUNTIME_HINT.format(lib=EDGETPU_LIBRARY) + "; the Edge TPU cannot run here "
                                  "until then (the int8 models still run on the CPU)")
    return edgetpu_interpreter(status_file)[1]
