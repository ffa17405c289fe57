"""Make PyPI torchvision importable beside the CPU torch build this project pins.

PyPI's torchvision wheel ships a C extension built for a different torch; when it fails to load,
`torchvision/_meta_registrations.py` still registers fake kernels for `torchvision::nms` and
`torchvision::qnms`, and the import dies with "operator torchvision::nms does not exist".
Declaring those two schemas (no kernels) first lets torchvision import: its models and transforms
work, its compiled ops (nms itself, roi_align, ...) do not.

The shim acts ONLY when torchvision cannot be imported as is, so a working install is untouched.
Importing this module applies it (best effort), so `import edge_vad_models._torchvision_compat`
before `import open_clip` is enough; `import_torchvision()` returns the module or raises a
one-line error. The default backbone (EfficientNet-Lite0) never needs torchvision.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

from edge_vad.errors import MissingDependency

_INSTALL_HINT = "pip install torchvision (keeping torch pinned: pip install torchvision torch==<your torch version>)"

# Kept at module level on purpose: dropping the Library object would unregister the schemas.
_SCHEMA_LIB: torch.library.Library | None = None
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _declare_missing_schemas() -> None:
    global _SCHEMA_LIB
    if _SCHEMA_LIB is not None:
        return
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        lib.define(schema)
    _SCHEMA_LIB = lib


def _forget_partial_import() -> None:
    # A failed import leaves torchvision's already-imported submodules behind; start clean.
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def shim_active() -> bool:
    """True when the schemas had to be declared (torchvision's compiled ops are unavailable)."""
    return _SCHEMA_LIB is not None


def import_torchvision() -> ModuleType:
    """Import torchvision, declaring the missing op schemas only if a plain import fails.

    Idempotent. Raises MissingDependency (an EdgeVadError) if torchvision is not installed or
    still cannot be imported.
    """
    try:
        import torchvision

        return torchvision
    except ModuleNotFoundError as exc:
        if exc.name == "torchvision":
            raise MissingDependency(f"torchvision is not installed; install it with: {_INSTALL_HINT}") from None
        raise MissingDependency(f"torchvision cannot be imported ({exc}); install it with: {_INSTALL_HINT}") from None
    except RuntimeError as exc:
        if "torchvision::" not in str(exc) or _SCHEMA_LIB is not None:
            raise MissingDependency(
                f"torchvision cannot be imported beside torch {torch.__version__} ({exc}); "
                f"reinstall a matching build: {_INSTALL_HINT}"
            ) from None
    _forget_partial_import()
    _declare_missing_schemas()
    try:
        import torchvision
    except (ImportError, RuntimeError) as exc:
        raise MissingDependency(
            f"torchvision cannot be imported beside torch {torch.__version__} even with the op-schema shim ({exc}); "
            f"reinstall a matching build: {_INSTALL_HINT}"
        ) from None
    return torchvision


# Applied on import so that libraries importing torchvision themselves (open_clip) work afterwards;
# a missing torchvision is reported by import_torchvision() when someone actually needs it.
try:
    import_torchvision()
except MissingDependency:
    pass
