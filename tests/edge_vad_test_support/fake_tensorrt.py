"""A stand-in for TensorRT's Python API that enforces TensorRT's documented rules (thread safety, the context an
engine was made in, the ONNX parser's opset per release, static calibration shapes, fast int8 / TF32 per GPU);
the engine computes with onnxruntime. Rules and sources: fake_nvidia.py."""

from __future__ import annotations

import json
import struct
import threading
import types
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edge_vad_test_support.fake_cuda import ILLEGAL_ADDRESS, Context, CudaFault, FakeGpu, _module

# onnx-tensorrt docs/operators.md per release: the highest opset each TensorRT's parser reads
MAX_OPSET = ((10, 0, 20), (8, 4, 17), (8, 0, 13))


def _max_opset(version: str) -> int:
    parts = tuple(int(p) for p in version.split(".")[:2])
    return next(opset for major, minor, opset in MAX_OPSET if parts >= (major, minor))


def tensorrt_module(gpu: FakeGpu, version: str = "10.3.0", corrupt: float = 0.0) -> types.ModuleType:
    """`tensorrt` at `version`; the engine runs the ONNX on onnxruntime. corrupt > 0 scales every output by
    (1 + corrupt): an engine that computes the wrong thing, for the reference check to catch."""
    import onnx
    import onnxruntime as ort

    trt = _module("tensorrt", __version__=version)
    trt.log = []  # what TensorRT would print through its logger
    trt.builds = []  # (thread, precision flags) per build

    class Logger:
        WARNING, ERROR = 2, 1

        def __init__(self, level: int = 2) -> None:
            self.level = level

    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.float32 = "float32"
    trt.nptype = lambda dt: np.dtype(dt).type
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
    ampere = gpu.cc >= (8, 0)

    def error(message: str) -> None:
        trt.log.append(message)
        gpu.violations.append(f"{threading.current_thread().name}: TensorRT: {message}")

    class Network:
        def __init__(self, flags: int) -> None:
            self.explicit = flags != 0 or int(version.split(".")[0]) >= 10
            self.inputs: List[Any] = []
            self.num_inputs = 0
            self.model: Any = None

        def get_input(self, i: int) -> Any:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            if not self.network.explicit:
                self.errors.append("ONNX models need an explicit-batch network (EXPLICIT_BATCH flag)")
                return False
            model = onnx.load(path)  # external data resolved next to the file, as TensorRT does
            opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
            if opset > _max_opset(version):
                self.errors.append(f"ModelImporter: opset {opset} is newer than this parser supports "
                                   f"(up to {_max_opset(version)})")
                return False
            self.network.model = model
            for vi in model.graph.input:
                dims = tuple(d.dim_value if d.dim_value else -1 for d in vi.type.tensor_type.shape.dim)
                self.network.inputs.append(types.SimpleNamespace(name=vi.name, shape=dims))
            self.network.num_inputs = len(self.network.inputs)
            return True

    class Config:
        def __init__(self) -> None:
            self.flags = {"TF32"} if ampere else set()
            self.int8_calibrator: Any = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: str) -> None:
            self.flags.discard(flag)

    class Builder:
        platform_has_fast_fp16 = gpu.cc >= (5, 3) and gpu.cc != (6, 1)
        platform_has_fast_int8 = gpu.cc >= (6, 1) and gpu.cc != (6, 2)

        def __init__(self, logger: Logger) -> None:
            self._busy = threading.Lock()

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def build_serialized_network(self, network: Network, config: Config) -> Optional[bytes]:
            if not self._busy.acquire(blocking=False):
                error("IBuilder used by two threads at once")
                return None
            try:
                ctx = gpu.runtime_ctx("buildSerializedNetwork")
                calib = config.int8_calibrator
                if "INT8" in config.flags:
                    if calib is None:
                        error("INT8 requested without a calibrator")
                        return None
                    inp = network.inputs[0]
                    nbytes = int(np.prod(inp.shape)) * 4  # a static network reads exactly its input per batch
                    while (ptrs := calib.get_batch([inp.name])) is not None:
                        try:
                            gpu.region(ctx, ptrs[0], nbytes, "calibration batch", ILLEGAL_ADDRESS)
                        except CudaFault:
                            error("Cuda Runtime (an illegal memory access was encountered) in calibration")
                            return None
                    calib.write_calibration_cache(b"TRT-calibration-table")
                trt.builds.append((threading.current_thread().name, tuple(sorted(config.flags))))
                precision = "int8" if "INT8" in config.flags else "fp16" if "FP16" in config.flags else "fp32"
                header = json.dumps({"precision": precision, "tf32": "TF32" in config.flags}).encode()
                model = network.model.SerializeToString()
                return struct.pack("<I", len(header)) + header + model
            finally:
                self._busy.release()

    class ExecutionContext:
        def __init__(self, engine: "Engine") -> None:
            self.engine, self.addr = engine, {}
            self._busy = threading.Lock()

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addr[name] = int(ptr)

        def execute_async_v3(self, stream_handle: int) -> bool:
            if not self._busy.acquire(blocking=False):
                error("IExecutionContext used by two threads at once")
                return False
            try:
                ctx = gpu.runtime_ctx("enqueueV3")
                if ctx is not self.engine.ctx or gpu.streams.get(int(stream_handle)) is not ctx:
                    error("Cuda Runtime (invalid resource handle)")
                    return False
                feeds = {}
                for name, shape, dtype in self.engine.inputs:
                    raw = gpu.region(ctx, self.addr[name], int(np.prod(shape)) * 4, "enqueueV3", ILLEGAL_ADDRESS)
                    feeds[name] = np.frombuffer(bytes(raw), np.float32).reshape(shape)
                outputs = self.engine.compute(feeds)
                for name, shape, dtype in self.engine.outputs:
                    value = np.ascontiguousarray(outputs[name], np.float32)
                    gpu.region(ctx, self.addr[name], value.nbytes, "enqueueV3", ILLEGAL_ADDRESS)[:] = value.tobytes()
                gpu.executions[threading.current_thread().name] = \
                    gpu.executions.get(threading.current_thread().name, 0) + 1
                return True
            except CudaFault:
                error("Cuda Runtime (an illegal memory access was encountered)")
                return False
            finally:
                self._busy.release()

    class Engine:
        def __init__(self, data: bytes, ctx: Context) -> None:
            (size,) = struct.unpack("<I", data[:4])
            self.meta = json.loads(data[4:4 + size])
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self.session = ort.InferenceSession(data[4 + size:], opts, providers=["CPUExecutionProvider"])
            self.ctx = ctx
            self.inputs = [(i.name, tuple(i.shape), "float32") for i in self.session.get_inputs()]
            self.outputs = [(o.name, tuple(o.shape), "float32") for o in self.session.get_outputs()]
            self.num_io_tensors = len(self.inputs) + len(self.outputs)

        def compute(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            half = self.meta["precision"] != "fp32"  # reduced precision, roughly: fp16 rounding in and out
            if half:
                feeds = {k: v.astype(np.float16).astype(np.float32) for k, v in feeds.items()}
            names = [o[0] for o in self.outputs]
            out = dict(zip(names, self.session.run(names, feeds)))
            for k, v in out.items():
                v = v.astype(np.float16).astype(np.float32) if half else v
                out[k] = v * np.float32(1.0 + corrupt)
            return out

        def get_tensor_name(self, i: int) -> str:
            return (self.inputs + self.outputs)[i][0]

        def get_tensor_mode(self, name: str) -> str:
            return "in" if name in [i[0] for i in self.inputs] else "out"

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            return next(t[1] for t in self.inputs + self.outputs if t[0] == name)

        def get_tensor_dtype(self, name: str) -> str:
            return "float32"

        def create_execution_context(self) -> ExecutionContext:
            if gpu.runtime_ctx("createExecutionContext") is not self.ctx:
                error("Cuda Runtime (invalid resource handle) creating an execution context")
            return ExecutionContext(self)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Optional[Engine]:
            ctx = gpu.runtime_ctx("deserializeCudaEngine")
            try:
                return Engine(bytes(data), ctx)
            except Exception:  # noqa: BLE001 - TensorRT returns None for a plan it cannot read
                return None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def serialized_precision(data: bytes) -> Dict[str, Any]:
    """The build settings a fake engine file records (precision, tf32)."""
    (size,) = struct.unpack("<I", data[:4])
    return json.loads(data[4:4 + size])


