"""Inference-only latency of models on backends, like trtexec: ``endoedge bench``.

What is timed (:data:`LATENCY_DEFINITION`): the host wall time, ``time.perf_counter_ns`` on the
calling thread, of one synchronous ``backend.infer(feed)`` call on one batch whose input is
already pre-processed in host memory. On GPU backends it includes the host<->device copies
(trtexec's "Latency" with data transfers, not its "GPU Compute Time"). It excludes decoding,
pre-processing, post-processing (box decoding, NMS) and rendering; the capture pipeline's report
measures those stages.

Protocol: every case (model x backend x batch) is built and activated first, gets ``warmup``
untimed calls, then the cases take turns in blocks of ``block`` calls (the first
``block_warmup`` of each block untimed when several cases alternate) until each has at least
``iterations`` timed calls and at least ``duration_s`` seconds of timed calls. Alternating
spreads machine noise (other processes, thermal state) over all cases equally; the untimed
calls at each switch keep one backend's spinning worker threads from being charged to the next.
The input is the model's own pre-processing of the bundled HoloHub colonoscopy frames, stacked
to the batch size, in the model's input dtype.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endoedge.data.media import CHECKPOINT_SUFFIXES, ENGINE_SUFFIXES
from endoedge.errors import EndoedgeError, ModelFormatError, UnknownNameError
from endoedge.runtime import (
    Backend,
    auto_backend,
    available_backends,
    backend_names,
    check_available,
    get_backend_class,
)
from endoedge.spec import PreprocessSpec
from endoedge.spec.device import parse_device
from endoedge.stats import STAT_KEYS, env_info, format_table, summarize

logger = logging.getLogger(__name__)

LATENCY_DEFINITION = (
    "host wall time (time.perf_counter_ns) of one synchronous backend.infer call on one batch; "
    "input already pre-processed in host memory; includes host<->device copies on GPU backends; "
    "excludes decode, pre-processing, post-processing (box decoding, NMS) and rendering"
)
_FEED_BUDGET_BYTES = 64 << 20  # distinct input batches kept per case (cycled through)
_CHECKPOINT_SUFFIXES = CHECKPOINT_SUFFIXES
_ENGINE_SUFFIXES = ENGINE_SUFFIXES


@dataclass
class Skipped:
    """A combination that was not measured, and why."""

    model: str
    backend: str
    batch: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": self.backend, "batch": self.batch, "reason": self.reason}

    def __str__(self) -> str:
        batch = "" if self.batch is None else f" batch {self.batch}"
        return f"{self.model} on {self.backend}{batch}: {self.reason}"


@dataclass
class Case:
    """One measured combination of model, backend and batch size; ``samples_ms`` grows as it runs."""

    model: Path
    label: str
    backend: Backend
    batch: int
    feeds: list[dict[str, np.ndarray]]
    device: str
    threads: int | None = None
    samples_ms: list[float] = field(default_factory=list)
    timed_ns: int = 0
    calls: int = 0
    gpu_ms: dict[str, list[float]] = field(default_factory=dict)  # trtexec-style parts, when the backend has them

    @property
    def row(self) -> str:
        """Table row label."""
        return f"{self.label}  {self.backend.name}/{self.device}  b{self.batch}"

    def call(self) -> int:
        """One ``infer`` on the next input; returns its wall time in ns."""
        feed = self.feeds[self.calls % len(self.feeds)]
        self.calls += 1
        t0 = time.perf_counter_ns()
        self.backend.infer(feed)
        return time.perf_counter_ns() - t0

    def record_gpu(self) -> None:
        """Keep the backend's CUDA-event times of the last call (``last_gpu_timings()``), if it has any.

        An optional backend hook: ``last_gpu_timings() -> {"h2d", "compute", "d2h"} ms | None``
        (the tensorrt backend); other backends do not define it.
        """
        hook = getattr(self.backend, "last_gpu_timings", None)
        parts = hook() if callable(hook) else None
        for key, ms in (parts or {}).items():
            self.gpu_ms.setdefault(key, []).append(float(ms))

    def done(self, iterations: int, duration_s: float) -> bool:
        return len(self.samples_ms) >= iterations and self.timed_ns >= duration_s * 1e9

    def result(self, warmup: int) -> dict[str, Any]:
        """The JSON record of this case (needs at least one sample)."""
        stats = summarize(self.samples_ms)
        feed = self.feeds[0][self.backend.input_name]
        return {
            "model": str(self.model),
            "backend": self.backend.name,
            "device": self.device,
            "batch": self.batch,
            "iterations": len(self.samples_ms),
            "warmup": warmup,
            "stats": stats,
            "throughput_ips": round(self.batch * 1000.0 / stats["mean"], 2) if stats["mean"] > 0 else None,
            "samples_ms": [round(s, 6) for s in self.samples_ms],  # exact: whole ns
            "backend_detail": self.backend.describe(),
            "input": {"name": self.backend.input_name, "shape": list(feed.shape), "dtype": str(feed.dtype)},
            "threads": self.threads,
            **({"gpu": {k: summarize(v) for k, v in self.gpu_ms.items()},
                "gpu_samples_ms": {k: [round(x, 6) for x in v] for k, v in self.gpu_ms.items()}}
               if self.gpu_ms else {}),
        }


# -- planning ---------------------------------------------------------------------------------
def resolve_backends(spec: str, model: Path) -> tuple[list[str], list[Skipped]]:
    """Backend names to try for ``model``: ``auto``, ``all`` (installed ones) or ``a,b``.

    Raises:
        UnknownNameError: a name is not registered (the message lists the known ones).
        BackendUnavailableError: an explicitly named backend's package is missing.
    """
    if spec == "auto":
        names = [auto_backend(model)]
    elif spec == "all":
        installed = available_backends()
        skipped = [Skipped(str(model), n, None, f"not installed (pip install 'endoedge[{get_backend_class(n).extra}]')")
                   for n in backend_names() if n not in installed]
        return installed, skipped
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if not names:
            raise UnknownNameError(f"--backend is empty; use auto, all or one of: {', '.join(backend_names())}")
    for name in names:
        check_available(name)
    return list(dict.fromkeys(names)), []


@dataclass
class _ModelInput:
    preprocess: PreprocessSpec
    dtype: np.dtype[Any]
    loaded: Any = None  # a checkpoint's LoadedModel, reused by the torch backend
    note: str = ""


def _onnx_input(path: Path) -> _ModelInput:
    """Pre-processing (from metadata, else stretch to the fixed input size) and input dtype."""
    from onnx import helper

    from endoedge.spec import ModelSpec, load_onnx_proto

    proto = load_onnx_proto(path)
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelFormatError(f"'{path}' has {len(inputs)} inputs; endoedge runs single-image-input detectors")
    tensor = inputs[0].type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    props = {p.key: p.value for p in proto.metadata_props}
    try:
        return _ModelInput(ModelSpec.from_metadata(props, where=f"'{path}'").preprocess, dtype)
    except ModelFormatError:
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        if len(dims) != 4 or dims[1] != 3 or not (dims[2] and dims[3]):
            raise ModelFormatError(
                f"'{path}' has no endoedge or Ultralytics metadata and no fixed N x 3 x H x W input "
                f"(shape {dims}); endoedge bench cannot build an input for it"
            ) from None
    pp = PreprocessSpec(input_size=(dims[2], dims[3]), resize="stretch", color="RGB")
    note = f"no endoedge/Ultralytics metadata: input = frames stretched to {dims[3]}x{dims[2]}, RGB, /255"
    return _ModelInput(pp, dtype, note=note)


def _engine_input(path: Path) -> _ModelInput:
    """Pre-processing and input dtype of a TensorRT engine, from its manifest."""
    from endoedge.spec import ModelSpec
    from endoedge.tensorrt.manifest import read_manifest

    manifest = read_manifest(path)
    inputs = manifest.inputs
    dtype = np.dtype(inputs[0].dtype) if inputs else np.dtype(np.float32)
    return _ModelInput(ModelSpec.from_metadata(manifest.spec, where=f"engine '{path}'").preprocess, dtype)


def _model_input(path: Path) -> _ModelInput:
    if path.suffix.lower() == ".onnx":
        return _onnx_input(path)
    if path.suffix.lower() in _ENGINE_SUFFIXES:
        return _engine_input(path)
    if path.suffix.lower() in _CHECKPOINT_SUFFIXES:
        from endoedge.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(path)
        return _ModelInput(loaded.spec.preprocess, np.dtype(np.float32), loaded=loaded)
    raise ModelFormatError(
        f"'{path}': endoedge bench runs .onnx files, TensorRT engines ({', '.join(_ENGINE_SUFFIXES)}) "
        f"and endoedge checkpoints ({', '.join(_CHECKPOINT_SUFFIXES)})"
    )


def _open_backend(name: str, path: Path, info: _ModelInput, device: str, threads: int | None,
                  trt_options: Mapping[str, Any] | None = None) -> Backend:
    """Construct and activate backend ``name`` on ``path``; EndoedgeError says why it cannot."""
    cls = check_available(name)
    options: dict[str, Any] = dict(trt_options or {}) if name in ("tensorrt", "tensorrt-rtx") else {}
    if name == "onnxruntime":
        if path.suffix.lower() != ".onnx":
            raise ModelFormatError("onnxruntime runs .onnx files; export the checkpoint first (endoedge export)")
        if threads:
            options["intra_op_threads"] = threads
    elif name == "torch":
        from endoedge.models.checkpoint import load_for_torch

        options["loaded"] = info.loaded if info.loaded is not None else load_for_torch(path)
        if threads:
            import torch

            torch.set_num_threads(threads)
    from endoedge.tensorrt.prepare import model_for_backend

    # backend="tensorrt": the build step (an .onnx built into the engine cache); the backend runs engines only
    runs, options = model_for_backend(name, path, device, options)
    backend = cls(runs, device=device, **options)
    backend.activate()
    return backend


def _device_of(backend: Backend) -> str:
    """The device a backend actually runs on (ONNX Runtime: its first execution provider)."""
    providers: list[str] = getattr(backend, "providers", None) or []
    if not providers:
        return backend.device
    index = parse_device(backend.device).ordinal
    first = providers[0]
    if first.startswith("CPU"):
        return "cpu"
    if first.startswith("Tensorrt"):
        return f"tensorrt:{index}"
    if first.startswith("CUDA"):
        return f"cuda:{index}"
    return first.removesuffix("ExecutionProvider").lower()


def sample_frames() -> list[np.ndarray]:
    """The bundled HoloHub frames as BGR arrays."""
    from endoedge.data.imageio import read_image
    from endoedge.data.samples import sample_frame_paths

    return [read_image(p) for p in sample_frame_paths()]


def make_feeds(
    input_name: str, preprocess: PreprocessSpec, dtype: np.dtype[Any], batch: int, frames: Sequence[np.ndarray]
) -> list[dict[str, np.ndarray]]:
    """Distinct pre-processed input batches (frames cycled), as many as fit in 64 MiB."""
    from endoedge.preprocess import Preprocessor

    pre = Preprocessor(preprocess)
    h, w = preprocess.input_size
    per_batch = batch * 3 * h * w * dtype.itemsize
    count = max(1, min(len(frames), _FEED_BUDGET_BYTES // max(per_batch, 1)))
    feeds = []
    for i in range(count):
        images = [frames[(i * batch + k) % len(frames)] for k in range(batch)]
        arr, _ = pre(images)
        feeds.append({input_name: np.array(arr, dtype=dtype, copy=True, order="C")})
    return feeds


def _model_labels(models: Sequence[Path]) -> dict[Path, str]:
    unique = list(dict.fromkeys(models))
    names = [m.name for m in unique]
    return {m: (m.name if names.count(m.name) == 1 else str(m)) for m in unique}


def plan(
    models: Sequence[str | Path],
    *,
    backend: str = "auto",
    device: str = "auto",
    batches: Sequence[int] | None = None,
    threads: int | None = None,
    frames: Sequence[np.ndarray] | None = None,
    trt_options: Mapping[str, Any] | None = None,
) -> tuple[list[Case], list[Skipped]]:
    """Build and activate every runnable (model, backend, batch); the others come back as skipped.

    ``batches=None``: 1, or a fixed-batch model's own batch size. A requested batch that a
    fixed-batch model cannot take is skipped with the reason.

    Raises:
        ModelFormatError: a model file is missing or unreadable.
        UnknownNameError, BackendUnavailableError: see :func:`resolve_backends`.
    """
    paths = [Path(m) for m in models]
    for p in paths:
        if not p.is_file():
            raise ModelFormatError(f"model '{p}' does not exist or is not a file")
    labels = _model_labels(paths)
    per_model = {p: resolve_backends(backend, p) for p in paths}  # validates names before loading
    frames = list(frames) if frames is not None else sample_frames()
    cases: list[Case] = []
    skipped: list[Skipped] = []
    try:
        for path in paths:
            names, skips = per_model[path]
            skipped += skips
            info = _model_input(path)
            if info.note:
                logger.warning("%s: %s", labels[path], info.note)
            for name in names:
                try:
                    runner = _open_backend(name, path, info, device, threads, trt_options)
                except EndoedgeError as err:
                    skipped.append(Skipped(str(path), name, None, str(err)))
                    continue
                wanted = list(batches) if batches else [runner.max_batch or 1]
                before = len(cases)
                for b in wanted:
                    if runner.max_batch is not None and b != runner.max_batch:
                        skipped.append(Skipped(str(path), name, b,
                                               f"the model has a fixed batch size of {runner.max_batch}"))
                        continue
                    feeds = make_feeds(runner.input_name, info.preprocess, info.dtype, b, frames)
                    cases.append(Case(path, labels[path], runner, b, feeds, _device_of(runner), threads))
                if len(cases) == before:
                    runner.deactivate()
    except BaseException:
        close(cases)
        raise
    return cases, skipped


def close(cases: Sequence[Case]) -> None:
    """Deactivate the cases' backends (each once)."""
    for backend in {id(c.backend): c.backend for c in cases}.values():
        backend.deactivate()


# -- measuring --------------------------------------------------------------------------------
def measure(
    cases: list[Case],
    *,
    warmup: int = 20,
    iterations: int = 200,
    duration_s: float = 0.0,
    block: int = 25,
    block_warmup: int = 5,
    on_skip: Callable[[Skipped], None] | None = None,
) -> tuple[list[Case], list[Skipped], bool]:
    """Warm up, then time the cases in alternating blocks (see the module docstring).

    A case whose warm-up fails with an :class:`~endoedge.errors.EndoedgeError` (e.g. a batch
    size the model cannot take) is dropped and reported as skipped.

    Returns:
        ``(measured cases, skipped, interrupted)``; ``interrupted`` is True when Ctrl-C stopped
        the run early, with the samples taken so far kept.
    """
    skipped: list[Skipped] = []
    live: list[Case] = []
    interrupted = False
    try:
        for case in cases:
            logger.info("warming up %s (%d calls)", case.row, warmup)
            try:
                for _ in range(max(1, warmup)):  # one untimed call at least: it checks the input
                    case.call()
            except EndoedgeError as err:
                skip = Skipped(str(case.model), case.backend.name, case.batch, str(err))
                skipped.append(skip)
                if on_skip:
                    on_skip(skip)
                continue
            live.append(case)
        timed_per_block = max(1, block - block_warmup)
        while True:
            running = [c for c in live if not c.done(iterations, duration_s)]
            if not running:
                break
            for case in running:
                if len(running) > 1:
                    for _ in range(block_warmup):
                        case.call()
                for _ in range(timed_per_block if len(running) > 1 else block):
                    ns = case.call()
                    case.record_gpu()
                    case.samples_ms.append(ns / 1e6)
                    case.timed_ns += ns
                    if case.done(iterations, duration_s):
                        break
    except KeyboardInterrupt:
        interrupted = True
    measured = [c for c in live if c.samples_ms]
    dropped = {(s.model, s.backend, s.batch) for s in skipped}
    skipped += [Skipped(str(c.model), c.backend.name, c.batch, "interrupted before timing")
                for c in cases if not c.samples_ms and (str(c.model), c.backend.name, c.batch) not in dropped]
    return measured, skipped, interrupted


def report(
    cases: Sequence[Case], skipped: Sequence[Skipped], *, settings: dict[str, Any], interrupted: bool = False
) -> dict[str, Any]:
    """The JSON report: ``env``, ``definition``, ``settings``, ``results``, ``skipped``, ``interrupted``."""
    warmup = int(settings.get("warmup", 0))
    return {
        "env": env_info(),
        "definition": LATENCY_DEFINITION,
        "settings": settings,
        "results": [c.result(warmup) for c in cases],
        "skipped": [s.to_dict() for s in skipped],
        "interrupted": interrupted,
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    """:func:`~endoedge.stats.format_table` of the results plus an images/s column."""
    labels = _model_labels([Path(r["model"]) for r in results])
    rows = {f"{labels[Path(r['model'])]}  {r['backend']}/{r['device']}  b{r['batch']}": r for r in results}
    text = format_table({k: r["stats"] for k, r in rows.items()},
                        title=f"inference latency, ms per batch (backend.infer; {len(STAT_KEYS)} statistics)")
    lines = text.splitlines()
    head = 1  # the title line
    out = lines[: head]
    out.append(lines[head] + f"  {'n':>5}  {'images/s':>9}")
    out.append(lines[head + 1] + "-" * 18)
    for line, r in zip(lines[head + 2 :], rows.values(), strict=True):
        ips = r["throughput_ips"]
        out.append(line + f"  {r['iterations']:>5}  " + (f"{ips:>9.1f}" if ips else f"{'-':>9}"))
    return "\n".join(out)


def gpu_table(results: Sequence[dict[str, Any]]) -> str | None:
    """trtexec-style GPU parts (CUDA events) of the results that have them: H2D, compute, D2H; else ``None``."""
    rows = [r for r in results if r.get("gpu")]
    if not rows:
        return None
    labels = _model_labels([Path(r["model"]) for r in rows])
    lines = ["GPU time per batch, ms (CUDA events: H2D copy | GPU compute | D2H copy; median / p99)"]
    for r in rows:
        parts = "  ".join(f"{k} {r['gpu'][k]['p50']:.3f} / {r['gpu'][k]['p99']:.3f}"
                          for k in ("h2d", "compute", "d2h") if k in r["gpu"])
        lines.append(f"{labels[Path(r['model'])]}  {r['backend']}/{r['device']}  b{r['batch']}: {parts}")
    return "\n".join(lines)
