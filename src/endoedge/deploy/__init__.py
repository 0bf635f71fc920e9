"""Deployment packaging: a Triton model repository from an ONNX or a TensorRT engine."""
