"""Triton Inference Server model repository from an endoedge ONNX model or TensorRT engine.

Layout written (one GPU server can then serve many carts)::

    REPO/NAME/config.pbtxt            name, platform, max_batch_size, I/O, batching, instances
    REPO/NAME/endoedge_spec.json      the endoedge ModelSpec (pre/post-processing), as key/values
    REPO/NAME/VERSION/model.onnx      platform "onnxruntime_onnx"   (from a .onnx)
    REPO/NAME/VERSION/model.plan      platform "tensorrt_plan"      (from a .engine/.plan/.trt + manifest)

The model serves **raw heads** (no NMS): a client letterboxes/normalises frames as the spec says
and decodes the outputs (``endoedge`` does both; the spec also sits in ``config.pbtxt`` as
``parameters`` under the same ``endoedge.*`` keys as the ONNX ``metadata_props``, so
``ModelSpec.from_metadata({k: p.string_value ...})`` rebuilds it from the server's model config).

I/O of a TensorRT engine comes from its manifest ``<engine>.json`` (or ``<engine stem>.json``),
read by :mod:`endoedge.tensorrt.manifest` (hand-written manifests need only ``io``):
``io`` (name, mode, dtype, shape with -1 for dynamic axes), ``profiles`` (per input: min/opt/max)
and ``spec`` (the ONNX metadata). A batch axis is dynamic when axis 0 is -1 on every I/O tensor;
then ``max_batch_size`` > 0 and dims exclude it, else ``max_batch_size`` is 0 and dims are full.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endoedge.data.media import ENGINE_SUFFIXES, ONNX_SUFFIXES
from endoedge.errors import ExportError, InputError, ModelFormatError
from endoedge.spec import ModelSpec, load_onnx_proto
from endoedge.tensorrt.manifest import TensorIO, find_manifest, load_manifest

logger = logging.getLogger(__name__)

DEFAULT_ONNX_MAX_BATCH = 8
# numpy dtype name -> Triton DataType (model_config.proto)
TRITON_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16", "object": "TYPE_STRING", "str": "TYPE_STRING",
}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output: name, numpy dtype name, shape (``-1`` = dynamic axis)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelIO:
    """What a Triton config needs from a model file."""

    platform: str
    filename: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    batch_limit: int | None  # the largest batch the model accepts; None = any (dynamic ONNX)
    metadata: dict[str, str]  # endoedge.* spec key/values ({} when the model has none)
    extra_files: tuple[Path, ...] = ()  # ONNX external-data files to copy beside the model
    notes: tuple[str, ...] = ()  # things the user must know (engine TensorRT version, ...)


@dataclass(frozen=True)
class TritonExport:
    """Result of :func:`export_triton`: paths written and the config text."""

    model_dir: Path
    model_path: Path
    config_path: Path
    spec_path: Path | None
    config_text: str
    platform: str
    max_batch_size: int
    notes: tuple[str, ...] = ()


def export_triton(
    model: str | Path,
    repo: str | Path,
    *,
    name: str | None = None,
    max_batch: int | None = None,
    instances: int = 1,
    kind: str = "gpu",
    preferred_batch: Sequence[int] = (),
    max_queue_delay_us: int | None = None,
    version: int = 1,
    force: bool = False,
) -> TritonExport:
    """Write ``repo/NAME`` for Triton from an ``.onnx`` or ``.engine``/``.plan`` (with manifest).

    Args:
        model: the model file.
        repo: the model repository folder (created if needed).
        name: the Triton model name (default: the file stem, sanitised).
        max_batch: ``max_batch_size`` (default: the engine profile's max batch, or 8 for a
            dynamic-batch ONNX); must be left unset for a fixed-batch model.
        instances: model instances (``instance_group.count``).
        kind: ``"gpu"`` or ``"cpu"`` (a TensorRT plan is GPU only).
        preferred_batch: ``dynamic_batching.preferred_batch_size`` values (1..max_batch).
        max_queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds`` (default: Triton's 0).
        version: the model version folder (>= 1).
        force: replace an existing ``repo/NAME``.

    Raises:
        ModelFormatError: missing model, unknown suffix, unreadable ONNX, engine without manifest.
        InputError: bad option values, output folder not writable, model folder exists.
    """
    src = Path(model)
    if not src.is_file():
        raise ModelFormatError(f"model '{src}' does not exist or is not a file")
    suffix = src.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        io = read_onnx_io(src)
    elif suffix in ENGINE_SUFFIXES:
        io = read_engine_io(src)
    else:
        raise ModelFormatError(
            f"'{src.name}': unknown model type '{src.suffix}'; give an .onnx file or a TensorRT "
            f"{'/'.join(ENGINE_SUFFIXES)} engine built by `endoedge build`"
        )
    model_name = name if name is not None else _default_name(src)
    if not _NAME.match(model_name):
        raise InputError(f"'{model_name}' is not a usable Triton model name; use letters, digits, '_', '-', '.'")
    if version < 1:
        raise InputError(f"--version must be >= 1 (got {version})")
    if instances < 1:
        raise InputError(f"--instances must be >= 1 (got {instances})")
    kind = kind.lower()
    if kind not in ("gpu", "cpu"):
        raise InputError(f"--kind must be gpu or cpu (got '{kind}')")
    if kind == "cpu" and io.platform == "tensorrt_plan":
        raise InputError("a TensorRT plan runs on the GPU only; use --kind gpu (or export the .onnx for CPU)")
    mbs = _max_batch_size(io, max_batch, src)
    preferred = _preferred(preferred_batch, mbs)
    if max_queue_delay_us is not None and max_queue_delay_us < 0:
        raise InputError(f"--max-queue-delay-us must be >= 0 (got {max_queue_delay_us})")
    if mbs == 0 and max_queue_delay_us is not None:
        raise InputError("dynamic batching needs a dynamic batch axis; this model's is fixed (drop --max-queue-delay-us)")
    text = render_config(
        model_name, io, mbs, instances=instances, kind=kind, preferred=preferred,
        max_queue_delay_us=max_queue_delay_us,
    )
    return _write_repo(Path(repo), model_name, version, src, io, text, mbs, force)


# -- model readers ----------------------------------------------------------------------------
def read_onnx_io(path: Path) -> ModelIO:
    """Inputs/outputs (initializers excluded), metadata and external-data files of an ONNX file."""
    from onnx import helper

    model = load_onnx_proto(path)
    inits = {t.name for t in model.graph.initializer}

    def info(vi: Any) -> TensorInfo:
        tt = vi.type.tensor_type
        try:
            dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        except Exception:  # noqa: BLE001 - bfloat16 and friends have no numpy type here
            dtype = {16: "bfloat16"}.get(tt.elem_type, f"onnx_elem_{tt.elem_type}")
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        return TensorInfo(vi.name, dtype, dims)

    inputs = tuple(info(vi) for vi in model.graph.input if vi.name not in inits)
    outputs = tuple(info(vi) for vi in model.graph.output)
    extra = []
    for t in model.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                f = path.parent / kv.value
                if not f.is_file():
                    raise ModelFormatError(f"'{path.name}' keeps weights in '{kv.value}', which is missing")
                extra.append(f)
    meta = {p.key: p.value for p in model.metadata_props}
    return ModelIO("onnxruntime_onnx", "model.onnx", inputs, outputs, None, _spec_metadata(meta, path),
                   tuple(dict.fromkeys(extra)))


def read_engine_io(path: Path) -> ModelIO:
    """I/O, batch limit and spec of a TensorRT engine from its manifest (the engine is not opened)."""
    found = find_manifest(path)
    if found is None:
        raise ModelFormatError(
            f"engine '{path.name}' has no manifest ({path.name}.json) to read its inputs and outputs "
            "from; rebuild it with `endoedge build`, or export the ONNX instead"
        )
    manifest = load_manifest(found, engine=path, partial=True)
    if manifest.flavour == "rtx":
        raise ModelFormatError(
            f"engine '{path.name}' was built by TensorRT for RTX, which Triton's TensorRT backend cannot load; "
            "export the ONNX instead (`endoedge export-triton MODEL.onnx`), or build the engine with full TensorRT "
            "(`endoedge build MODEL.onnx --runtime tensorrt`) on the serving GPU"
        )
    inputs = tuple(_manifest_tensor(t) for t in manifest.inputs)
    outputs = tuple(_manifest_tensor(t) for t in manifest.outputs)
    if not inputs or not outputs:
        raise ModelFormatError(f"manifest '{found.name}' lists no inputs or no outputs; rebuild the engine")
    limit = manifest.max_batch
    if limit is None and any(t.shape and t.shape[0] == -1 for t in inputs):
        raise ModelFormatError(f"manifest '{found.name}' has a dynamic batch axis but no profiles; rebuild")
    note = (
        f"engine built with TensorRT {manifest.trt_version or '?'} ({manifest.precision or '?'}) on "
        f"{manifest.gpu.name or 'an unknown GPU'}: the Triton server needs the same TensorRT version and GPU model"
    )
    return ModelIO("tensorrt_plan", "model.plan", inputs, outputs, limit,
                   _spec_metadata(manifest.spec, path), notes=(note,))


def _manifest_tensor(t: TensorIO) -> TensorInfo:
    dtype = t.dtype.lower()
    aliases = {"float": "float32", "half": "float16", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
    return TensorInfo(t.name, aliases.get(dtype, dtype), t.shape)


def _spec_metadata(meta: Mapping[str, str], path: Path) -> dict[str, str]:
    """The model's spec as ``endoedge.*`` key/values (Ultralytics metadata converted), or ``{}``."""
    try:
        spec = ModelSpec.from_metadata(meta, where=str(path))
    except ModelFormatError:
        logger.warning("%s has no endoedge metadata: the Triton config carries no pre/post-processing spec", path)
        return {}
    return spec.to_metadata()


# -- config -----------------------------------------------------------------------------------
def _batch_is_dynamic(io: ModelIO) -> bool:
    tensors = (*io.inputs, *io.outputs)
    return all(t.shape and t.shape[0] == -1 for t in tensors)


def _max_batch_size(io: ModelIO, requested: int | None, src: Path) -> int:
    if not _batch_is_dynamic(io):
        if requested:
            shapes = ", ".join(f"{t.name}{list(t.shape)}" for t in io.inputs)
            raise InputError(
                f"'{src.name}' has a fixed batch axis ({shapes}), so Triton cannot batch it; drop "
                "--max-batch, or re-export with a dynamic batch (endoedge export without --static-batch)"
            )
        return 0
    limit = io.batch_limit
    if requested is None:
        return limit if limit is not None else DEFAULT_ONNX_MAX_BATCH
    if requested < 1:
        raise InputError(f"--max-batch must be >= 1 (got {requested})")
    if limit is not None and requested > limit:
        raise InputError(
            f"--max-batch {requested} exceeds the engine's optimization profile (max batch {limit}); "
            f"use --max-batch {limit} or rebuild with a larger --batch MIN:OPT:MAX"
        )
    return requested


def _preferred(values: Sequence[int], mbs: int) -> tuple[int, ...]:
    if not values:
        return ()
    if mbs == 0:
        raise InputError("--preferred-batch needs a dynamic batch axis; this model's is fixed")
    bad = [v for v in values if not 1 <= v <= mbs]
    if bad:
        raise InputError(f"--preferred-batch {bad} outside 1..{mbs} (max_batch_size)")
    return tuple(sorted(set(values)))


def _pb_string(text: str) -> str:
    """A protobuf text-format string literal."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _tensor_block(t: TensorInfo, batched: bool) -> str:
    if t.dtype not in TRITON_DTYPES:
        raise ExportError(f"tensor '{t.name}' has dtype {t.dtype}, which Triton has no type for")
    dims = list(t.shape[1:] if batched else t.shape)
    if not dims:
        dims = [1]  # Triton needs at least one dim; a scalar per batch item is [1]
    return (
        f"  {{\n    name: {_pb_string(t.name)}\n    data_type: {TRITON_DTYPES[t.dtype]}\n"
        f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}"
    )


def render_config(
    name: str,
    io: ModelIO,
    max_batch_size: int,
    *,
    instances: int = 1,
    kind: str = "gpu",
    preferred: Sequence[int] = (),
    max_queue_delay_us: int | None = None,
) -> str:
    """``config.pbtxt`` text (protobuf text format of Triton's ``inference.ModelConfig``)."""
    batched = max_batch_size > 0
    parts = [
        f"name: {_pb_string(name)}",
        f"platform: {_pb_string(io.platform)}",
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_tensor_block(t, batched) for t in io.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(t, batched) for t in io.outputs) + "\n]",
    ]
    if batched:
        db = []
        if preferred:
            db.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]")
        if max_queue_delay_us is not None:
            db.append(f"  max_queue_delay_microseconds: {max_queue_delay_us}")
        parts.append("dynamic_batching {\n" + "\n".join(db) + ("\n" if db else "") + "}")
    parts.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_{kind.upper()}\n  }}\n]")
    for key, value in sorted(io.metadata.items()):
        parts.append(f"parameters {{\n  key: {_pb_string(key)}\n  value: {{ string_value: {_pb_string(value)} }}\n}}")
    return "\n".join(parts) + "\n"


# -- writing ----------------------------------------------------------------------------------
def _default_name(src: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "_", src.stem)
    return stem if stem and stem[0] not in ".-" else f"model_{stem}"


def _write_repo(
    repo: Path, name: str, version: int, src: Path, io: ModelIO, text: str, mbs: int, force: bool
) -> TritonExport:
    if repo.exists() and not repo.is_dir():
        raise InputError(f"output '{repo}' exists and is not a folder; pick another -o")
    target = repo / name
    if target.exists() and not force:
        raise InputError(f"'{target}' already exists; pass --force to replace it, or pick another --name")
    try:
        repo.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    except OSError as err:
        raise InputError(f"cannot write to '{repo}': {err.strerror}; pick another -o") from err
    try:
        vdir = stage / str(version)
        vdir.mkdir()
        shutil.copy2(src, vdir / io.filename)
        for extra in io.extra_files:
            shutil.copy2(extra, vdir / extra.name)
        (stage / "config.pbtxt").write_text(text, encoding="utf-8")
        if io.metadata:
            (stage / "endoedge_spec.json").write_text(json.dumps(io.metadata, indent=2, sort_keys=True) + "\n",
                                                      encoding="utf-8")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=repo))
            os.replace(target, old / name)
            os.replace(stage, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, target)
    except OSError as err:
        shutil.rmtree(stage, ignore_errors=True)
        raise InputError(f"cannot write the Triton model '{target}': {err.strerror or err}") from err
    logger.info("wrote Triton model %s (%s, max_batch_size %d)", target, io.platform, mbs)
    return TritonExport(
        model_dir=target,
        model_path=target / str(version) / io.filename,
        config_path=target / "config.pbtxt",
        spec_path=target / "endoedge_spec.json" if io.metadata else None,
        config_text=text,
        platform=io.platform,
        max_batch_size=mbs,
        notes=io.notes,
    )
