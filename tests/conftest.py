"""Shared test set-up: keep DDS on this machine and on a domain of this test run's own."""
import os

import pytest

# Set before anything imports rclpy, so every node of this run (and any child process,
# which inherits the environment) talks only on loopback, on this run's own domain.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))


@pytest.fixture
def ros_context():
    """A fresh rclpy context, shut down after the test."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random RegionBLIP checkpoint with the default tokenizer (tests/tiny_checkpoint.py)."""
    from tests.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported with every modality (python -m export.onnx)."""
    from export.onnx import main

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    assert main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--max-new-tokens", "8"]) == 0
    return out


@pytest.fixture(scope="module")
def onnx_describer(tiny_bundle):
    """The tiny bundle on ONNX Runtime (CPU), one per test module."""
    from runtime import Describer

    return Describer.from_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def torch_describer(tiny_checkpoint):
    """The tiny checkpoint on the torch backend's transformers reference, one per test module."""
    from runtime import Describer

    return Describer.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def static_describer(tiny_checkpoint):
    """The tiny checkpoint on the torch backend's static-cache decoder, one per test module."""
    from runtime import Describer

    return Describer.from_checkpoint(tiny_checkpoint, decoder="static")
