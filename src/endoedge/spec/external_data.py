"""Untrusted ONNX files: external tensor data must stay inside the model's folder.

An ONNX file may keep large tensors in side files named by a relative ``location``
(``model.onnx.data``). A crafted file could name ``../../home/user/.ssh/id_rsa`` or ``/etc/shadow``
instead, and whatever reads the weights (ONNX, ONNX Runtime, TensorRT's parser) would read that
file into a tensor (path traversal). :func:`check_external_data` refuses, with one line, any
location that is absolute, climbs out with ``..``, or resolves (symbolic links followed) outside the
folder that holds the model. Every ONNX read in endoedge goes through it
(:func:`endoedge.spec.load_onnx_proto`, the ONNX Runtime backend).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from endoedge.errors import ModelFormatError

_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL


def check_external_data(model: Any, path: str | Path) -> None:
    """Refuse external data that lies outside the folder of the ONNX file ``path``.

    Args:
        model: the ``onnx.ModelProto`` read from ``path`` (without its external data).
        path: the ONNX file it was read from.

    Raises:
        ModelFormatError: one line naming the tensor and its location.
    """
    folder = Path(os.path.realpath(Path(path).parent))
    for tensor in _tensors(model):
        if getattr(tensor, "data_location", 0) != _EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        problem = (external_location_problem(location, folder) if isinstance(location, str)
                   else "a file name that is not UTF-8 text")
        if problem:
            raise ModelFormatError(
                f"'{path}': tensor {tensor.name[:80]!r} has its data in {location[:200]!r}, {problem}; "
                "refusing it (an ONNX file may only use data files in its own folder)"
            )


def external_location_problem(location: str, folder: Path) -> str | None:
    """Why ``location`` (an external-data path, relative to ``folder``) is unsafe, or None."""
    if not location or "\x00" in location:
        return "an empty or invalid file name"
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or location.startswith(("/", "\\")):
        return "an absolute path"
    if ".." in posix.parts or ".." in windows.parts:
        return "a path that climbs out of the model's folder ('..')"
    real = Path(os.path.realpath(folder / location))
    if real != folder and folder not in real.parents:
        return f"which resolves outside the model's folder (to {str(real)[:200]})"
    return None


def _tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of a model: initializers, sparse ones, node attributes, sub-graphs and
    local functions."""
    graph = getattr(model, "graph", None)
    if graph is not None:
        yield from _graph_tensors(graph)
    for function in getattr(model, "functions", ()):
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for g in attr.graphs:
            yield from _graph_tensors(g)
