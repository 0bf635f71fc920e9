"""The Ray engine (``--engine ray [--address ADDR]``): the same job on Ray Data.

The input paths become a Ray dataset; ``map_batches`` runs a callable-class actor pool (each
actor loads the models once, then decodes, pre-processes and infers its batches with the local
engine's code, one GPU per actor when the cluster has GPUs); the driver iterates the results as
they stream in and writes them with the same writer, so resume, the settings check and the
summary are identical to the local engine. Image files must be readable at the same path on
every node (a shared filesystem).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from endoedge._optional import require
from endoedge.batch.engine import EngineOptions, RecordSink
from endoedge.batch.models import ModelRef, StageTotals
from endoedge.batch.sources import Source
from endoedge.errors import InputError

logger = logging.getLogger(__name__)

_STAGES = ("decode", "preprocess", "infer", "postprocess")


class BatchPredictor:
    """The Ray actor: ``batch["path"], batch["file"]`` -> ``{"record": JSON lines, stage ms}``."""

    def __init__(self, refs: list[tuple[str, str]], model_kwargs: Mapping[str, Any], max_pixels: int,
                 full_decode: bool = False) -> None:
        from pathlib import Path

        from endoedge.batch.models import load_models

        self.models = load_models([ModelRef(n, Path(p)) for n, p in refs], **dict(model_kwargs))
        self.max_pixels = max_pixels
        self.full_decode = full_decode

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pathlib import Path

        from endoedge.batch.prepare import prepare_file
        from endoedge.batch.sources import Item

        times = StageTotals()
        prepared = [prepare_file(Item(str(p), Path(str(f))), self.models.specs, self.models.needs_image, self.max_pixels,
                                 self.full_decode)
                    for p, f in zip(batch["path"], batch["file"], strict=True)]
        for p in prepared:
            times.decode += p.decode_ms
            times.preprocess += p.preprocess_ms
        records = self.models.records(prepared, times)
        n = len(records)
        out = {"record": np.array([json.dumps(r, separators=(",", ":")) for r in records], dtype=object)}
        for stage in _STAGES:
            out[f"{stage}_ms"] = np.full(n, getattr(times, stage) / max(n, 1), dtype=np.float64)
        return out


def connect_failure(address: str | None, err: BaseException) -> str:
    """The one-line message for a ``ray.init`` that failed: Ray's own first line, and the fix
    (token authentication named when any error in the chain is Ray's authentication refusal)."""
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    where = f"connect to the Ray cluster at {address}" if address else "start a local Ray"
    if any("Authentication" in type(x).__name__ or "token is missing or incorrect" in str(x) for x in chain):
        return (f"cannot {where}: it refused this driver's authentication ({first}); the cluster uses token "
                "authentication: run endoedge with RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token "
                "or RAY_AUTH_TOKEN), or start every node and the driver with RAY_AUTH_MODE=disabled")
    if address:
        return (f"cannot {where}: {first}; check the address (`ray status` on the head node prints it), "
                "that this machine reaches it, and that both run the same Ray version")
    return f"cannot {where}: {first}"


def run_ray(source: Source, refs: list[ModelRef], model_kwargs: Mapping[str, Any], sink: RecordSink, *,
            done: set[str], opts: EngineOptions, times: StageTotals, address: str | None = None) -> int:
    """Run the job's remaining inputs on Ray Data; return how many were processed.

    ``address`` joins an existing cluster (``"auto"`` or ``"ray://host:10001"``); ``None``
    starts a local Ray (``opts.workers`` CPUs) unless one is already initialized. Actors:
    ``opts.workers`` without GPUs, one per GPU otherwise.
    """
    ray = require("ray", extra="ray", purpose="--engine ray")
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            kwargs["num_cpus"] = opts.workers
        try:
            ray.init(address=address, **kwargs)
        except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError and its own
            raise InputError(connect_failure(address, err)) from err
        started = True
    try:
        rows = [{"path": it.path, "file": str(it.file.resolve())} for it in source.items if it.key not in done]
        if not rows:
            return 0
        gpus = int(ray.cluster_resources().get("GPU", 0))
        kwargs = dict(model_kwargs)
        if gpus:
            kwargs["device"] = "cuda"
        actors = max(1, min(gpus or opts.workers, -(-len(rows) // opts.batch_size)))
        logger.info("ray: %d inputs, %d actor(s), %s", len(rows), actors, f"{gpus} GPU(s)" if gpus else "CPU")
        ds = ray.data.from_items(rows)
        ds = ds.map_batches(
            BatchPredictor,
            fn_constructor_kwargs={"refs": [(r.name, str(r.path.resolve())) for r in refs],
                                   "model_kwargs": kwargs, "max_pixels": opts.max_pixels,
                                   "full_decode": opts.full_decode},
            batch_size=opts.batch_size, batch_format="numpy", concurrency=actors,
            num_gpus=1 if gpus else 0, num_cpus=1,
        )
        processed = 0
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            records = [json.loads(s) for s in out["record"]]
            for stage in _STAGES:
                setattr(times, stage, getattr(times, stage) + float(np.sum(out[f"{stage}_ms"])))
            sink(records)
            processed += len(records)
        return processed
    finally:
        if started:
            ray.shutdown()
