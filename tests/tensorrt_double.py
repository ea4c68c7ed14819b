"""A stand-in for TensorRT (and ModelOpt) in export.trt's tests: bookkeeping without a GPU."""
import functools
import json
import shutil

from export.trt_build import Toolchain

MACHINE = {"tensorrt": "10.0.0-test-double", "gpu": "Test Double GPU", "compute_capability": "0.0"}


class DoubleToolchain:
    """A stand-in for TensorRT: the 'plan' names the ONNX file, and 'running' it runs ONNX Runtime."""

    def __init__(self, machine=MACHINE, offset=0.0):
        self.machine, self.offset, self.built, self.timing_caches = dict(machine), offset, [], []
        self.settings, self.quantized = {}, []

    def build(self, onnx_path, profile, settings, workspace_bytes, timing_cache):
        name = onnx_path.name.split(".")[0]
        self.built.append(name)
        self.settings[name] = settings
        self.timing_caches.append(timing_cache)
        plan = json.dumps({"test_double": True, "onnx": str(onnx_path), "precision": settings["precision"]}).encode()
        return plan, (timing_cache or b"") + name.encode() + b";"

    def quantize(self, source, target, recipe, calibration, input_names):
        """'Quantizes' by copying the graph and its weights: ModelOpt's output is specified on a GPU machine."""
        self.quantized.append((source.name, target.name, recipe["method"], calibration, tuple(input_names)))
        shutil.copy(source, target)
        shutil.copy(source.with_name(source.name + ".data"), target.parent / (source.name + ".data"))

    def open(self, plan, output_names, name):
        session = _onnx_session(json.loads(plan)["onnx"])
        offset = self.offset

        class Session:
            def run(self, feeds):
                return [output + offset for output in session.run(output_names, feeds)]

        return Session()

    def toolchain(self) -> Toolchain:
        return Toolchain(self.machine, self.build, self.open, self.quantize)


@functools.lru_cache(maxsize=None)
def _onnx_session(path: str):
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
