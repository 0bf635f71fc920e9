"""ONNX Runtime vs PyTorch on the same real-looking inputs: the check ``endoedge export`` runs.

Errors are reported per output as the largest absolute difference and the largest difference
relative to the PyTorch output's largest magnitude; the check fails when any element violates
``|ort - torch| <= atol + rtol * |torch|`` (numpy ``allclose`` semantics).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from endoedge.errors import ParityError
from endoedge.export.onnx_export import INPUT_NAME
from endoedge.models.checkpoint import LoadedModel
from endoedge.preprocess import real_looking_batch


@dataclass(frozen=True)
class OutputError:
    """Error statistics of one output tensor."""

    name: str
    max_abs: float
    max_rel: float
    ok: bool


@dataclass(frozen=True)
class ParityReport:
    """Per-output errors of one parity check, and whether all stayed within tolerance."""

    outputs: list[OutputError]
    atol: float
    rtol: float
    batch_sizes: tuple[int, ...]

    @property
    def ok(self) -> bool:
        """All outputs within tolerance."""
        return all(o.ok for o in self.outputs)

    def lines(self) -> list[str]:
        """Human-readable lines, one per output."""
        return [
            f"{o.name:>16}: max abs err {o.max_abs:.3e}, max rel err {o.max_rel:.3e} "
            f"({'ok' if o.ok else 'OVER TOLERANCE'}; atol {self.atol:g}, rtol {self.rtol:g})"
            for o in self.outputs
        ]


def check_parity(
    onnx_path: str | Path,
    loaded: LoadedModel,
    *,
    batch_sizes: tuple[int, ...] = (1, 3),
    atol: float = 1e-3,
    rtol: float = 1e-3,
    raise_on_failure: bool = True,
) -> ParityReport:
    """Compare ONNX Runtime (CPU) with PyTorch eager (CPU) on bundled colonoscopy frames.

    Several batch sizes exercise the dynamic batch axis.

    Raises:
        ParityError: some output differs beyond tolerance (when ``raise_on_failure``).
    """
    from endoedge.runtime.ort import OnnxRuntimeBackend
    from endoedge.runtime.pytorch import TorchBackend

    worst: dict[str, list[float]] = {}
    failed: set[str] = set()
    with OnnxRuntimeBackend(onnx_path, device="cpu") as ort_b, TorchBackend(
        onnx_path, device="cpu", loaded=loaded
    ) as torch_b:
        sizes = batch_sizes if ort_b.max_batch is None else (ort_b.max_batch,)
        for n in sizes:
            batch = real_looking_batch(loaded.spec, n)
            got = ort_b.infer({INPUT_NAME: batch})
            ref = torch_b.infer({INPUT_NAME: batch})
            for name, r in ref.items():
                diff = np.abs(got[name] - r)
                scale = float(np.abs(r).max()) or 1.0
                w = worst.setdefault(name, [0.0, 0.0])
                w[0] = max(w[0], float(diff.max()))
                w[1] = max(w[1], float(diff.max()) / scale)
                if not np.all(diff <= atol + rtol * np.abs(r)):
                    failed.add(name)
    report = ParityReport(
        outputs=[OutputError(n, w[0], w[1], n not in failed) for n, w in worst.items()],
        atol=atol,
        rtol=rtol,
        batch_sizes=tuple(sizes),
    )
    if raise_on_failure and not report.ok:
        raise ParityError(
            f"ONNX Runtime and PyTorch disagree beyond tolerance on {', '.join(sorted(failed))}: "
            + "; ".join(line.strip() for line in report.lines() if "OVER" in line)
        )
    return report
