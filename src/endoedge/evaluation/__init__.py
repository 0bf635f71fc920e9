"""Evaluating a deployed detector on a labelled dataset: ``endoedge eval`` and its Python API.

Example::

    from endoedge.evaluation import evaluate_model

    report = evaluate_model("polyp.onnx", "kvasir-seg", split="data/splits/kvasir_seg_val.txt")
    print(report["coco"]["map50"], report["prf"]["0.50"]["all"]["f1"])

See :mod:`endoedge.evaluation.metrics` for what each number means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.evaluation.runner import EvalRun

MAP_CONF = 0.001  # the score threshold of the detection pass (COCO mAP wants the ranked list)


@dataclass(frozen=True)
class EvalSet:
    """A labelled evaluation set as the user names it (what :func:`load_eval_dataset` parses).

    Attributes:
        data: dataset path (Kvasir-SEG folder, COCO json or YOLO layout).
        split: file of image stems to keep, or None for all images.
        fmt: ``auto``, ``kvasir``, ``coco`` or ``yolo``.
        images_dir: images folder of a COCO json, when not beside it.
        class_names: class names of a YOLO layout without a names file.
    """

    data: str | Path
    split: str | Path | None = None
    fmt: str = "auto"
    images_dir: str | Path | None = None
    class_names: list[str] | None = None

    def load(self) -> Any:
        """The parsed :class:`~endoedge.data.datasets.Dataset` (see :func:`load_eval_dataset`)."""
        return load_eval_dataset(self.data, fmt=self.fmt, split=self.split, images_dir=self.images_dir,
                                 class_names=self.class_names)

    def options(self) -> dict[str, Any]:
        """The keyword arguments :func:`evaluate_model` takes for this set (besides ``data``)."""
        return {"split": self.split, "fmt": self.fmt, "images_dir": self.images_dir,
                "class_names": self.class_names}


def load_eval_dataset(
    data: str | Path,
    *,
    fmt: str = "auto",
    split: str | Path | None = None,
    images_dir: str | Path | None = None,
    class_names: list[str] | None = None,
) -> Any:
    """Parse ``data`` (Kvasir-SEG, COCO json or YOLO layout) and keep the ``split`` file's stems.

    Raises:
        InputError: missing or unparseable data, an empty split, stems not in the data.
    """
    from endoedge.data.datasets import load_dataset, read_stems

    if not Path(data).exists():
        raise InputError(f"dataset '{data}' does not exist")
    dataset = load_dataset(data, fmt, images_dir=images_dir, class_names=class_names)
    if split is not None:
        dataset = dataset.subset(read_stems(split))
    if not dataset.samples:
        raise InputError(f"dataset '{data}' has no images")
    if not dataset.class_names:
        raise InputError(f"dataset '{data}' names no classes (no boxes at all?)")
    return dataset


def evaluate_model(model: str | Path, data: str | Path, **options: Any) -> dict[str, Any]:
    """Load a model with :func:`endoedge.load`, run it over a dataset and return the report dict.

    The arguments are :func:`evaluate_run`'s; this returns its ``report``.
    """
    return evaluate_run(model, data, **options).report


def evaluate_run(
    model: str | Path,
    data: str | Path,
    *,
    split: str | Path | None = None,
    fmt: str = "auto",
    images_dir: str | Path | None = None,
    class_names: list[str] | None = None,
    backend: str = "auto",
    device: str = "auto",
    conf: float | None = None,
    iou: float | None = None,
    map_conf: float = MAP_CONF,
    negatives: str | Path | None = None,
    proxy_negatives: bool = False,
    endoscopy: Any = None,
    unclear: str | Path | None = None,
    **load_options: Any,
) -> EvalRun:
    """Load a model with :func:`endoedge.load`, run it over a dataset; the report dict and the
    per-image detections it was computed from (:class:`~endoedge.evaluation.runner.EvalRun`).

    Args:
        model: any file :func:`endoedge.load` opens (ONNX or checkpoint).
        data: dataset path; ``split`` a file of image stems to keep.
        conf: operating score threshold; ``None`` = the model's default.
        iou: NMS IoU threshold; ``None`` = the model's default.
        map_conf: score threshold of the detection pass (0.001: COCO mAP's setting).
        negatives: folder of polyp-free images for specificity and AUC.
        proxy_negatives: also report a clearly labelled proxy AUC on box-free strips.
        unclear: multi-task models: folder of unreadable frames (triage truth ``unclear``).
        endoscopy: :class:`~endoedge.endoscopy.EndoscopyConfig` override (``None`` = model's).
        **load_options: more :func:`endoedge.load` arguments (e.g. ``spec`` for a foreign ONNX).
    """
    from dataclasses import replace

    from endoedge.detector import load
    from endoedge.evaluation.runner import negative_samples, run_detector

    dataset = load_eval_dataset(data, fmt=fmt, split=split, images_dir=images_dir, class_names=class_names)
    negs = negative_samples(negatives) if negatives is not None else []
    blurred = negative_samples(unclear) if unclear is not None else []
    with load(model, backend=backend, device=device, iou_threshold=iou, endoscopy=endoscopy, **load_options) as base:
        operating = base.spec.score_threshold if conf is None else conf
        # The detection pass: a view sharing base's backend (closed once, by the with block).
        det = base.with_thresholds(score_threshold=map_conf, max_detections=max(100, base.spec.max_detections))
        if not 0.0 <= operating <= 1.0:
            raise InputError(f"--conf must be in [0, 1], got {operating}")
        if operating < map_conf:
            raise InputError(f"--conf {operating} is below the detection pass threshold {map_conf}")
        run = run_detector(det, dataset, conf=operating, negatives=negs, proxy_negatives=proxy_negatives,
                           unclear=blurred)
        return replace(run, report={
            "model": str(model),
            "backend": det.describe(),
            "data": str(data),
            "split": None if split is None else str(split),
            "map_conf": map_conf,
            "nms_iou": det.spec.iou_threshold,
            "endoscopy": None if det.cleaner is None else det.cleaner.config.to_dict(),
            **run.report,
        })


__all__ = ["MAP_CONF", "EvalSet", "evaluate_model", "evaluate_run", "load_eval_dataset"]
