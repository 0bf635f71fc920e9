"""A whole batch job: check the output, load the models, resume, run an engine, write the summary.

This is what ``endoedge batch`` calls; use it from Python as::

    from endoedge.batch import BatchConfig, run_batch
    summary = run_batch(BatchConfig(source="study/", models=["polyp.onnx"], out="study.jsonl"))
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endoedge._version import __version__
from endoedge.batch.decode import MAX_PIXELS
from endoedge.batch.engine import EngineOptions, run_local
from endoedge.batch.models import ModelRef, StageTotals, load_models
from endoedge.batch.progress import Progress
from endoedge.batch.results import (
    ResultWriter,
    check_settings,
    meta_path,
    prepare_output,
    scan_results,
)
from endoedge.batch.sources import open_source
from endoedge.batch.summary import Summary
from endoedge.errors import InputError

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass
class BatchConfig:
    """Everything a batch job needs (the CLI options of ``endoedge batch``).

    Attributes:
        source: image folder, list file or video.
        models: ``PATH`` or ``NAME=PATH`` per model (detectors and/or classifiers).
        out: results JSONL.
        report: summary JSON (optional).
        resume: continue an existing ``out``; ``overwrite``: replace it.
        flag_threshold: a detector flags a frame when its max detection score >= this.
        flag_labels: a classifier flags a frame when its top label is one of these.
        fsync_every: records between fsyncs of ``out``.
        engine: ``"local"`` or ``"ray"`` (``address``: an existing Ray cluster, None = local).
        progress: draw a progress bar (else log lines).
        device: model device (``auto``, ``cpu``, ``cuda[:N]``).
        score_threshold, iou_threshold, max_detections: detector overrides (None = the model's).
        streams: inference streams (local engine): copies of the models that run batches
            concurrently, each ONNX Runtime session with ``cores / streams`` threads unless
            ``intra_op_threads`` is set. 1 when a model cleans endoscopy frames (stateful).
        intra_op_threads: ONNX Runtime threads per model (0 = one per core, or per stream share).
        spin: let ONNX Runtime's threads spin-wait between runs (off by default: it starves
            the decode workers).
        full_decode: decode every JPEG at full size (default: large JPEGs are decoded reduced
            by libjpeg to no less than the network input, see :mod:`endoedge.batch.decode`).
        html: write the study report page here (:mod:`endoedge.batch.study_html`); thumbnails
            of flagged frames are written as the batch goes into ``<html stem>_files/``.
    """

    source: str | Path
    models: Sequence[str]
    out: str | Path
    report: str | Path | None = None
    resume: bool = False
    overwrite: bool = False
    batch_size: int = 8
    workers: int = 2
    decode: str = "threads"
    max_pixels: int = MAX_PIXELS
    flag_threshold: float = 0.5
    flag_labels: Sequence[str] = ()
    fsync_every: int = 100
    engine: str = "local"
    address: str | None = None
    progress: bool = True
    device: str = "auto"
    score_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None
    streams: int = 2
    intra_op_threads: int = 0
    spin: bool = False
    full_decode: bool = False
    html: str | Path | None = None
    endoscopy: Any = None
    stop: threading.Event = field(default_factory=threading.Event)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~endoedge.batch.models.load_models`."""
        return {"device": self.device, "flag_threshold": self.flag_threshold, "flag_labels": tuple(self.flag_labels),
                "score_threshold": self.score_threshold, "iou_threshold": self.iou_threshold,
                "max_detections": self.max_detections, "intra_op_threads": self.intra_op_threads,
                "spin": self.spin, "endoscopy": self.endoscopy}


def run_batch(cfg: BatchConfig) -> dict[str, Any]:
    """Run the job; return the summary (also written to ``cfg.report``).

    Raises:
        InputError: bad options, an existing ``out`` without ``resume``/``overwrite``, a resume
            with other settings, or an unreadable source.
        ModelFormatError: a model cannot be loaded.
    """
    if cfg.engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, got '{cfg.engine}'")
    if cfg.resume and cfg.overwrite:
        raise InputError("--resume and --overwrite exclude each other")
    if not cfg.models:
        raise InputError("give at least one --model")
    opts = EngineOptions(cfg.batch_size, cfg.workers, cfg.decode, cfg.max_pixels, cfg.full_decode)
    opts.check()
    if cfg.max_pixels < 1:
        raise InputError("--max-pixels must be >= 1")
    out = Path(cfg.out)
    prepare_output(out, resume=cfg.resume, overwrite=cfg.overwrite)
    if cfg.report is not None and Path(cfg.report).resolve() == out.resolve():
        raise InputError("--report must not be the --out file")
    if cfg.html is not None and Path(cfg.html).resolve() in (out.resolve(), Path(cfg.report or out).resolve()):
        raise InputError("--html must not be the --out or --report file")
    source = open_source(cfg.source)
    if cfg.engine == "ray" and source.kind == "video":
        raise InputError("--engine ray reads image folders and list files; run a video with --engine local")
    refs = [ModelRef.parse(m) for m in cfg.models]
    if cfg.streams < 1:
        raise InputError(f"--streams must be >= 1, got {cfg.streams}")
    kwargs = cfg.model_kwargs()
    if cfg.streams > 1 and not cfg.intra_op_threads:
        kwargs["intra_op_threads"] = max(1, (os.cpu_count() or 1) // cfg.streams)
    models = load_models(refs, **kwargs)
    streams = [models]
    try:
        if cfg.engine == "local" and not models.needs_image:
            streams += [load_models(refs, **kwargs) for _ in range(cfg.streams - 1)]
        settings = {"models": models.settings(), "max_pixels": cfg.max_pixels,
                    "decode": "full" if cfg.full_decode else "reduced"}
        summary = Summary()
        done: set[str] = set()
        resumed = 0
        if cfg.resume and out.exists():
            check_settings(out, settings)
            _check_same_source(out, source.location)
            scan = scan_results(out)
            for rec in scan.records:
                summary.add(rec)
            done, resumed = scan.keys, len(scan.records)
            logger.info("resuming %s: %d records done%s", out, resumed,
                        f", torn last line cut ({scan.repaired_bytes} bytes)" if scan.repaired_bytes else "")
        if not (cfg.resume and meta_path(out).is_file()):
            from endoedge.stats import write_json

            write_json(meta_path(out), {"endoedge": __version__, "source": str(Path(source.location).resolve()),
                                        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                        "settings": settings})
        total = None if source.kind == "video" and not source.count else max(0, source.count - len(done))
        times = StageTotals()
        writer = ResultWriter(out, fsync_every=cfg.fsync_every, truncate=cfg.overwrite)
        logger.info("batch: %s -> %s (%s engine)", source.describe(), out, cfg.engine)
        progress = Progress(total, bar=cfg.progress)
        gallery = None
        if cfg.html is not None:
            from endoedge.batch.gallery import THUMB_SIDE, Gallery

            gallery = Gallery(cfg.html, source)
            opts.thumb = THUMB_SIDE

        def sink(records: list[dict[str, Any]], thumbs: list[Any] | None = None) -> None:
            t0 = time.perf_counter_ns()
            writer.write(records)
            if gallery is not None:
                gallery.add(records, thumbs)
            times.write += (time.perf_counter_ns() - t0) / 1e6
            errors = flagged = 0
            for rec in records:
                summary.add(rec)
                errors += "error" in rec
                flagged += bool(rec.get("flagged"))
            progress.update(len(records), errors=errors, flagged=flagged)

        t0 = time.perf_counter()
        try:
            if cfg.engine == "local":
                processed = run_local(source, streams, sink, done=done, opts=opts, times=times, stop=cfg.stop)
            else:
                from endoedge.batch.ray_engine import run_ray

                models.close()  # the Ray actors load their own copies
                processed = run_ray(source, refs, cfg.model_kwargs(), sink, done=done, opts=opts, times=times,
                                    address=cfg.address)
        finally:
            wall = time.perf_counter() - t0
            writer.close()
            progress.close()
        report = summary.report(processed=processed, resumed=resumed, wall_s=wall, times=times, extra={
            "source": source.describe(), "out": str(out), "engine": cfg.engine,
            "settings": settings, "batch_size": cfg.batch_size, "workers": cfg.workers, "decode": cfg.decode,
            "streams": len(streams) if cfg.engine == "local" else None,
        })
        if cfg.report is not None:
            from endoedge.stats import write_json

            write_json(cfg.report, report)
        if gallery is not None and cfg.html is not None:
            from endoedge.batch.study_html import write_study_html

            report["html"] = str(write_study_html(cfg.html, out, source, gallery, report))
        return report
    finally:
        for m in streams:
            m.close()


def _check_same_source(out: Path, location: Path) -> None:
    """Refuse to resume ``out`` from another SRC than the one its sidecar names."""
    import json

    try:
        stored = json.loads(meta_path(out).read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return  # no or unreadable sidecar: check_settings has decided already
    if stored and Path(stored).resolve() != Path(location).resolve():
        raise InputError(f"'{out}' was made from '{stored}', not '{location}'; resume with the same SRC, "
                         "or use a new --out")
