"""The quantize workflow with its gates (what ``endoedge quantize`` runs).

:func:`quantize_gated`: INT8 (explicit Q/DQ, calibrated) or FP16 copy of an FP32 ONNX, the
TensorRT Q/DQ rule check, then the gates against the FP32 model: with an evaluation set, the
comparison at the operating point plus mAP (:func:`~endoedge.calibration.compare.compare_models`);
with ``agree`` frames, the label-free box agreement
(:class:`~endoedge.calibration.agreement.AgreementGate`); with neither, the agreement on
calibration frames held out of calibration (:func:`~endoedge.calibration.agreement.hold_out`),
unless ``holdout=False``. An INT8 model that fails is repaired by keeping its most sensitive
layers in float (:func:`~endoedge.calibration.sensitivity.greedy_fallback`). The result is a
:class:`~endoedge.calibration.report.QuantReport`; the output file is kept either way.

Example::

    from endoedge.calibration.gate import QuantOptions, quantize_gated

    report = quantize_gated("polyp.onnx", "polyp.int8.onnx",
                            QuantOptions(calib="frames/", agree="cart.mp4"), echo=print)
    print(report.passed, report.failures, report.float_nodes)
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from endoedge.calibration.compare import DEFAULT_MAX_DROP
from endoedge.calibration.operating_point import (
    DEFAULT_MAX_FALSE_ALARM_RISE,
    DEFAULT_MAX_SCORE_SHIFT,
    DEFAULT_MAX_SENSITIVITY_DROP,
    DEFAULT_MIN_AGREEMENT,
    GateLimits,
    check_threshold,
)
from endoedge.calibration.report import AgreementResult, CompareResult, QuantReport
from endoedge.errors import InputError

if TYPE_CHECKING:
    from endoedge.calibration.agreement import AgreementGate
    from endoedge.calibration.data import CalibrationData
    from endoedge.calibration.sources import Item
    from endoedge.evaluation.runner import EvalRun
    from endoedge.spec import ModelSpec

logger = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp16")
CONFIRM_MIN = 16  # fewest unseen frames a fallback's pass is confirmed on (the held-out minimum)


@dataclass(frozen=True)
class QuantOptions:
    """What :func:`quantize_gated` does (the ``endoedge quantize`` options).

    Attributes:
        precision: ``"int8"`` (Q/DQ, needs ``calib``) or ``"fp16"``.
        calib: calibration images: folder (recursive), glob, video or labelled set (INT8); for
            FP16 only the source of the held-out agreement frames.
        calib_split: keep only the image stems in this file.
        method: calibration method, one of :data:`~endoedge.calibration.quantize.METHODS`.
        float_output_layers: keep the layers that feed the outputs directly in float
            (:func:`~endoedge.calibration.graph_rules.output_layers`; INT8; default on).
        float_output_depth: with ``float_output_layers``: 1 = the layers that feed the outputs
            directly; 2 adds the weighted layers that feed those, and so on.
        bias_correction: INT8: correct the quantized Convs' float biases so their per-channel
            output means match FP32's on calibration frames
            (:mod:`~endoedge.calibration.bias_correction`; default on).
        weight_rounding: INT8: re-round the quantized Convs' weights for the least output error
            on calibration frames (:mod:`~endoedge.calibration.weight_rounding`).
        smooth: INT8: move each quantized Conv input's per-channel range spread into its weights
            with this strength (0-1; :mod:`~endoedge.calibration.smoothing`); ``None`` = off.
        num_images: calibration images, spread over the source.
        batch: calibration batch size (``None`` = 8, or the model's fixed batch).
        seed: selection seed (calibration, held-out and agreement frames).
        eval_data: labelled set for the gate (``None`` = no labelled gate).
        split: file of image stems of ``eval_data`` to evaluate.
        fmt: ``eval_data`` layout: ``auto``, ``kvasir``, ``coco`` or ``yolo``.
        negatives: folder of polyp-free frames for the false-alarm criterion (with ``eval_data``).
        conf: operating score threshold of the gates (``None`` = the model's).
        agree: unlabelled frames for the agreement gate (folder, glob, video).
        agree_images: frames of ``agree`` used, spread over it.
        holdout: without ``eval_data`` and ``agree``, hold calibration frames out and gate on them.
        max_drop: largest allowed mAP@0.5 drop, in points (1 point = 0.01).
        min_agreement: smallest share of FP32's boxes the copy must keep.
        max_sensitivity_drop: largest frame-sensitivity drop, in points.
        max_false_alarm_rise: largest false-alarm share rise on ``negatives``, in points.
        max_score_shift: largest mean upward score shift of FP32's boxes (score units).
        max_fallback: INT8: most layers to keep in float to pass the gate (0 = none).
        fallback_tries: INT8: most layers tried in float (``None`` = ``2 * max_fallback``); a
            layer stays float only when the copy comes closer to passing.
        sensitivity_images: frames the per-layer ranking measures on: the agreement gate's
            (``agree`` or held-out) frames when that gate runs, else calibration images.
    """

    precision: str = "int8"
    calib: str | Path | None = None
    calib_split: str | Path | None = None
    method: str = "entropy"
    float_output_layers: bool = True
    float_output_depth: int = 1
    bias_correction: bool = True
    weight_rounding: bool = False
    smooth: float | None = None
    num_images: int = 500
    batch: int | None = None
    seed: int = 0
    eval_data: str | Path | None = None
    split: str | Path | None = None
    fmt: str = "auto"
    negatives: str | Path | None = None
    conf: float | None = None
    agree: str | Path | None = None
    agree_images: int = 200
    holdout: bool = True
    max_drop: float = DEFAULT_MAX_DROP
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_sensitivity_drop: float = DEFAULT_MAX_SENSITIVITY_DROP
    max_false_alarm_rise: float = DEFAULT_MAX_FALSE_ALARM_RISE
    max_score_shift: float = DEFAULT_MAX_SCORE_SHIFT
    max_fallback: int = 10
    fallback_tries: int | None = None
    sensitivity_images: int = 32

    @property
    def limits(self) -> GateLimits:
        """The gate's bounds."""
        return GateLimits(self.min_agreement, self.max_sensitivity_drop, self.max_false_alarm_rise, self.max_drop,
                          self.max_score_shift)


@dataclass(frozen=True)
class Verdict:
    """One check of a candidate by every gate that applies (a float-fallback step's verdict).

    Attributes:
        passed: every gate passed.
        drop_points: mAP@0.5 drop in points (``None`` without an evaluation set).
        box_agreement: the agreement gate's box agreement, else the labelled gate's.
        shortfall: how far from passing, in points, summed over every gate's criteria (0 =
            passed; :func:`~endoedge.calibration.report.shortfall`): the fallback keeps the
            candidate that is closest.
    """

    passed: bool
    drop_points: float | None
    box_agreement: float | None
    shortfall: float


def quantize_gated(
    model: str | Path,
    output: str | Path,
    options: QuantOptions | None = None,
    *,
    spec: ModelSpec | None = None,
    echo: Callable[[str], None] | None = None,
) -> QuantReport:
    """Quantize (INT8 Q/DQ) or convert (FP16) ``model`` to ``output``, check it, gate it.

    Args:
        model: FP32 ONNX exported by endoedge (or Ultralytics).
        output: the ``.onnx`` to write (replaced if it exists; kept when the gate fails).
        options: see :class:`QuantOptions` (default: INT8 without calibration data: an error).
        spec: the model's spec (default: read from its metadata).
        echo: receives each progress line (``endoedge quantize`` prints them); default: logged.

    Returns:
        the :class:`~endoedge.calibration.report.QuantReport`; its ``passed`` is ``False`` when
        a gate failed, ``None`` when none ran.

    Raises:
        InputError: no calibration data for INT8, calibration images that are evaluation
            images, limits or a threshold out of range, an empty ``agree`` source, a model that
            is not a single-input detector or whose fixed batch differs.
        ExportError: quantization fails or the file breaks TensorRT's Q/DQ rules.
    """
    opts = options or QuantOptions()
    if opts.precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got '{opts.precision}'")
    opts.limits.check()
    check_threshold(opts.conf)
    model, out = Path(model), Path(output)
    if spec is None:
        from endoedge.spec import ModelSpec, read_onnx_metadata

        spec = ModelSpec.from_metadata(read_onnx_metadata(model), where=str(model))
    run = _Workflow(model, out, opts, echo or _log)
    held = run.plan_frames()  # every frame source is checked before any work
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="endoedge-quant-") as tmp:
        if opts.precision == "fp16":
            from endoedge.calibration.quantize import convert_fp16

            convert_fp16(model, out)
            run.say(f"wrote {out} (FP16 weights and activations, float32 inputs/outputs; runs in ONNX Runtime)")
            run.gate(data=None, cache=None)
        else:
            run.int8(spec, Path(tmp), held)
    run.report.wall_s = round(time.perf_counter() - t0, 1)
    return run.report


def _log(line: str) -> None:
    logger.info("%s", line)


class _Workflow:
    """One :func:`quantize_gated` call: its inputs, the report being filled, the progress sink."""

    def __init__(self, model: Path, out: Path, opts: QuantOptions, say: Callable[[str], None]) -> None:
        self.model, self.out, self.opts, self.say = model, out, opts, say
        self.report = QuantReport(model=str(model), output=str(out), precision=opts.precision)
        self.agree_gate: AgreementGate | None = None
        self.pool: list[Item] = []  # every frame of the agreement gate's source (for the confirmation)
        self.reference_run: EvalRun | None = None  # FP32 on eval_data, evaluated once
        self.last_text = ""  # the last check's printed result

    def plan_frames(self) -> list[Item]:
        """Find the agreement frames (``agree``, or the held-out calibration frames) before any
        work; returns the held-out items (empty when none)."""
        from endoedge.calibration.agreement import hold_out, spread_frames
        from endoedge.calibration.sources import discover

        o = self.opts
        if o.agree:
            self.pool = discover(o.agree, role="--agree source")  # the confirmation draws from the rest
            items = spread_frames(self.pool, num_images=o.agree_images, seed=o.seed)
            self.agree_gate = self._agreement_gate(items, o.agree, held_out=False)
            return []
        if o.eval_data or not o.holdout or not o.calib:
            return []
        source = discover(o.calib, split=o.calib_split)
        held = hold_out(source, o.seed)
        self.pool = source
        names = ", ".join(it.describe() for it in held[:3]) + (", ..." if len(held) > 3 else "")
        if not held:
            self.say(f"agreement gate skipped: --calib {o.calib} has {len(source)} image(s), too few to hold "
                     "any out; pass --agree FRAMES or --eval DATA")
        elif o.precision == "fp16":
            self.say(f"no --eval/--agree given: gating on {len(held)} of the {len(source)} --calib frames "
                     f"({names})")
        else:
            self.say(f"no --eval/--agree given: {len(held)} of the {len(source)} calibration images are held out "
                     f"of calibration for the agreement gate ({names}; all listed in the report)")
        if held:
            self.agree_gate = self._agreement_gate(held, o.calib, held_out=o.precision == "int8")
        return held

    def _agreement_gate(self, items: list[Item], source: str | Path, *, held_out: bool) -> AgreementGate:
        from endoedge.calibration.agreement import AgreementGate

        o = self.opts
        return AgreementGate(self.model, items, source=source, held_out=held_out, conf=o.conf,
                             min_agreement=o.min_agreement, max_score_shift=o.max_score_shift, device="cpu")

    def int8(self, spec: ModelSpec, tmp: Path, held: list[Item]) -> None:
        """Calibrate (without the held-out frames), quantize, check the Q/DQ rules, gate."""
        from endoedge.calibration import load_calibration_data
        from endoedge.calibration.qdq_check import check_qdq
        from endoedge.calibration.quantize import quantize_int8

        o = self.opts
        if not o.calib:
            raise InputError("INT8 needs calibration images: --calib SRC (folder, glob, video or labelled set)")
        input_name, fixed_batch = _input(self.model)
        batch = o.batch or fixed_batch or 8
        if fixed_batch and batch != fixed_batch:
            raise InputError(f"'{self.model}' has a fixed batch of {fixed_batch}; use --batch {fixed_batch}")
        data = load_calibration_data(o.calib, spec, num_images=o.num_images, batch_size=batch,
                                     input_name=input_name, seed=o.seed, split=o.calib_split, exclude=held)
        self.say(f"calibration: {data.num_images} images from {o.calib}"
                 + (f" ({Path(o.calib_split).name})" if o.calib_split else "")
                 + f", batch {data.batch_size}, sha256 {data.content_hash[:16]}..."
                 + (f", {len(data.skipped)} unreadable skipped" if data.skipped else ""))
        self.report.calibration = data.describe()
        if o.eval_data:
            _refuse_overlap(data, o.eval_data, o)
        if self.agree_gate is not None and not held:
            shared = set(self.agree_gate.items) & set(data.items)
            if shared:
                self.say(f"note: {len(shared)} --agree frames are also calibration images")
        cache = tmp / "ranges.json"
        result = quantize_int8(self.model, self.out, data, method=o.method, cache_path=cache,
                               float_output_layers=o.float_output_layers, float_output_depth=o.float_output_depth,
                               bias_correction=o.bias_correction, weight_rounding=o.weight_rounding,
                               smooth=o.smooth)
        qdq = check_qdq(self.out)
        self.say(f"wrote {self.out} (INT8 Q/DQ, {o.method} calibration); {qdq.summary()}")
        if "endoedge.quant_weight_rounding" in result.metadata:
            wr = json.loads(result.metadata["endoedge.quant_weight_rounding"])
            self.say(f"re-rounded the INT8 weights of {wr['layers']} layer(s) for the least output error on "
                     f"{wr['images']} calibration frames ({wr['flipped']} weights moved to their other grid "
                     f"neighbour; output-error variance {wr['error_before']:.4g} -> {wr['error_after']:.4g})")
        if "endoedge.quant_smoothing" in result.metadata:
            sm = json.loads(result.metadata["endoedge.quant_smoothing"])
            self.say(f"smoothed the inputs of {sm['layers']} convolution(s) (alpha {sm['alpha']}, "
                     f"{sm['images']} calibration frames): median channel-range spread "
                     f"{sm['spread_before']:.1f} -> {sm['spread_after']:.1f}")
        if "endoedge.quant_bias_correction" in result.metadata:
            bc = json.loads(result.metadata["endoedge.quant_bias_correction"])
            self.say(f"corrected the float biases of {bc['layers']} quantized layer(s) on {bc['images']} calibration "
                     "frames (their output means now match FP32's; --no-bias-correction skips this)")
        if result.output_layers:
            self.say(f"kept {len(result.output_layers)} output layer(s) in float (they feed the scores/boxes "
                     "directly; --quantize-output-layers quantizes them too)")
        self.report.method, self.report.qdq = o.method, qdq.summary()
        self.report.qdq_violations, self.report.metadata = qdq.violations, result.metadata
        if qdq.violations:
            raise InputError(f"the quantized model breaks TensorRT's Q/DQ rules: {qdq.violations[0]}")
        self.gate(data=data, cache=cache)

    def check(self, candidate: Path, *, show: bool) -> Verdict | None:
        """Every gate that applies on ``candidate``; fills the report; ``None`` when none applies."""
        from endoedge.calibration.agreement import format_agreement_result
        from endoedge.calibration.compare import compare_models, format_compare
        from endoedge.evaluation import EvalSet

        o = self.opts
        cmp: CompareResult | None = None
        agr: AgreementResult | None = None
        text = []
        if o.eval_data:
            cmp = compare_models(self.model, candidate, EvalSet(o.eval_data, split=o.split, fmt=o.fmt),
                                 limits=o.limits, conf=o.conf, negatives=o.negatives, device="cpu",
                                 reference_run=self.reference_run)
            self.reference_run = cmp.reference_run
            self.report.gate, self.report.raw_heads = cmp.gate, cmp.raw_heads
            self.report.operating_point = cmp.operating_point
            text.append(format_compare(cmp))
        if self.agree_gate is not None:
            agr = self.agree_gate.check(candidate)
            self.report.agreement = agr
            text.append(format_agreement_result(agr))
        if cmp is None and agr is None:
            return None
        self.last_text = "\n".join(text)
        if show:
            self.say(self.last_text)
        return Verdict(passed=(cmp is None or cmp.gate.passed) and (agr is None or agr.passed),
                       drop_points=None if cmp is None else cmp.gate.drop_points,
                       box_agreement=agr.criterion.value if agr is not None else
                       cmp.gate.box_agreement if cmp is not None else None,
                       shortfall=(0.0 if cmp is None else cmp.gate.shortfall)
                       + (0.0 if agr is None else agr.shortfall))

    def gate(self, *, data: CalibrationData | None, cache: Path | None) -> None:
        """Run the gates; for INT8 that fails, fall back layer by layer."""
        if not self.opts.holdout and not (self.opts.eval_data or self.opts.agree):
            self.say("--no-gate: accuracy NOT checked; run `endoedge eval --compare "
                     f"{self.model} {self.out} --agree FRAMES` before deploying")
            return
        verdict = self.check(self.out, show=True)
        if verdict is None:
            self.say("no --eval DATA, --agree FRAMES or --calib frames to hold out: accuracy NOT checked; run "
                     f"`endoedge eval --compare {self.model} {self.out} --agree FRAMES` before deploying")
            return
        if verdict.passed or data is None or self.opts.max_fallback <= 0:
            return
        self.fallback(data, cache, verdict)

    def fallback(self, data: CalibrationData, cache: Path | None, first: Verdict) -> None:
        """Rank the quantized layers, then keep in float, one at a time in rank order, those that
        bring the copy closer to passing, until the gates pass; the file left is the closest copy
        measured (the first one when no layer helped)."""
        from endoedge.calibration.qdq_check import check_qdq
        from endoedge.calibration.quantize import quantize_int8
        from endoedge.calibration.sensitivity import greedy_fallback, rank_layers

        o = self.opts
        rank_data, where = self._ranking_frames(data)
        n_batches = max(1, -(-o.sensitivity_images // rank_data.batch_size))
        n_images = min(n_batches * rank_data.batch_size, rank_data.num_images)
        self.say(f"INT8 fails the gate: ranking layers by sensitivity on {n_images} {where} ...")

        def progress(done: int, total: int) -> None:
            if done % 10 == 0 or done == total:
                logger.info("sensitivity: %d/%d layers", done, total)

        ranking = rank_layers(self.model, self.out, rank_data, n_batches=n_batches, progress=progress,
                              threshold=o.conf)
        self.say(f"  full INT8 operating-point cost (proxy) {ranking.full_int8_error:.4g}; most costly layers:")
        self.say(f"  {'node':<40}{'op':>6}{'cost if float':>16}{'gain':>12}")
        for x in ranking.layers[:10]:
            self.say(f"  {x.node:<40}{x.op_type:>6}{x.error_if_float:>16.4g}{x.gain:>12.4g}")
        self.report.sensitivity = ranking

        def quantize(nodes: list[str]) -> Path:
            quantize_int8(self.model, self.out, data, method=o.method, nodes_to_exclude=nodes, cache_path=cache,
                          float_output_layers=o.float_output_layers, float_output_depth=o.float_output_depth,
                          bias_correction=o.bias_correction, weight_rounding=o.weight_rounding,
                               smooth=o.smooth)
            return self.out

        def gate(path: Path) -> Verdict:
            verdict = self.check(path, show=False)
            assert verdict is not None  # the first check ran a gate, so every later one does
            return verdict

        result = greedy_fallback(ranking, quantize, gate, max_layers=o.max_fallback,
                                 max_tries=o.fallback_tries, first=first)
        self.report.fallback = result
        tried, kept = len(result.steps), len(result.float_nodes)
        if result.steps and not result.passed:
            self.say(f"  tried {tried} layer(s) in float, {kept} brought the copy closer to passing; "
                     + ("none did: writing the first copy again" if not kept else
                        "writing the closest copy" + (" again" if result.rewritten else "")))
        if result.rewritten:  # the file on disk is the best step again: measure it so the report is its own
            self.check(self.out, show=True)
        elif result.steps:
            self.say(self.last_text)
        qdq = check_qdq(self.out)
        self.report.qdq = qdq.summary()
        names = ", ".join(result.float_nodes) or "none"
        self.say(f"kept in float ({len(result.float_nodes)}): {names}; {qdq.summary()}")
        if result.passed:
            self.confirm(data, tried)

    def confirm(self, data: CalibrationData, tried: int) -> None:
        """The fallback chose its layers on the agreement gate's frames, so its pass is optimistic:
        judge the file again, same criteria, on as many frames of the same source that neither
        calibration nor the gate used (the report's ``confirmation``, whose verdict then counts).
        Without such frames (or with a labelled gate only) say so and how to check."""
        from endoedge.calibration.agreement import format_agreement_result
        from endoedge.calibration.sources import select

        gate, o = self.agree_gate, self.opts
        if gate is None:
            pool: list[Item] = []
        else:
            used = set(data.items) | set(gate.items)
            pool = [it for it in self.pool if it not in used]
        if gate is None or len(pool) < min(len(gate.items), CONFIRM_MIN):
            self.say(f"note: the fallback chose these layers on the gate's own frames ({tried} tried), so this pass "
                     f"is optimistic and no unseen frames are left to confirm it; check on other frames: endoedge "
                     f"eval --compare {self.model} {self.out} --agree FRAMES")
            return
        items = select(pool, min(len(gate.items), len(pool)), o.seed + 1)
        video = " (frames of the same video(s) as the gate's: not independent of them)" if any(
            it.frame >= 0 for it in items) else ""
        self.say(f"the fallback chose its layers on the gate's frames ({tried} tried): confirming on {len(items)} "
                 f"other frames of {gate.source} that neither calibration nor the fallback saw{video} ...")
        result = self._agreement_gate(items, gate.source, held_out=gate.held_out).check(self.out)
        self.report.confirmation = result
        self.say(format_agreement_result(result).replace("agreement gate:", "confirmation:"))
        if not result.passed:
            self.say(f"the fallback's pass does not hold on frames it did not see: {self.out} is kept but FAILS; "
                     "FP16 (--precision fp16) keeps every box, or gate on the cart's own frames (--agree FRAMES)")

    def _ranking_frames(self, data: CalibrationData) -> tuple[CalibrationData, str]:
        """The frames the layers are ranked on, and how to name them: the agreement gate's frames
        (``--agree``, or the held-out calibration frames) when there is that gate, so the fallback
        repairs what the gate measured there (e.g. extra boxes on the cart's polyp-free frames, which
        calibration images need not show); else the calibration images."""
        from endoedge.calibration.data import CalibrationData
        from endoedge.calibration.sources import select

        o, gate = self.opts, self.agree_gate
        if gate is None or not gate.items:
            return data, "calibration images"
        items = select(gate.items, min(len(gate.items), o.sensitivity_images), o.seed)
        frames = CalibrationData(data.spec, items, source=str(gate.source), batch_size=data.batch_size,
                                 input_name=data.input_name)
        return frames, "held-out calibration frames" if gate.held_out else "--agree frames"


def _refuse_overlap(data: CalibrationData, eval_data: str | Path, opts: QuantOptions) -> None:
    """Calibrating on evaluation images inflates the gate: refuse it."""
    from endoedge.evaluation import load_eval_dataset

    evalset = load_eval_dataset(eval_data, fmt=opts.fmt, split=opts.split)
    eval_paths = {s.path.resolve() for s in evalset.samples}
    shared = [it for it in data.items if it.path.resolve() in eval_paths]
    if shared:
        raise InputError(
            f"{len(shared)} calibration images are also evaluation images (e.g. {shared[0].path.name}); "
            "calibrate on other images, e.g. --calib-split with the train split"
        )


def _input(model: Path) -> tuple[str, int | None]:
    """The model's input name and its fixed batch size (``None`` when dynamic)."""
    from endoedge.spec import load_onnx_proto

    graph = load_onnx_proto(model).graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"'{model}' has {len(inputs)} inputs; endoedge quantizes single-input detectors")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, (int(dims[0].dim_value) or None) if dims else None
