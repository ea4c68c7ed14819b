"""Checkpoint -> ONNX graphs -> TensorRT engines, written as a self-describing bundle."""
