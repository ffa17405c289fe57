"""The bundle writer lives in the runtime (edge_vad.bundle.writer): the Edge TPU compile step writes bundles
without torch. Re-exported here for the export toolchain."""

from edge_vad.bundle.writer import BundleWriter, check_out_dir

__all__ = ["BundleWriter", "check_out_dir"]
