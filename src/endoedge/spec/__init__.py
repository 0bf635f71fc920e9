"""What a deployed model needs besides its weights: pre-processing, decoder, classes, thresholds.

A :class:`ModelSpec` travels inside every ONNX file endoedge exports, as ``metadata_props`` under
keys prefixed ``endoedge.``, so a deployed ``.onnx`` alone is enough to run it. Ultralytics
detection exports (metadata ``names``, ``imgsz``, ``stride``) are read too, and ONNX files with
neither can be described with explicit arguments (:func:`spec_for_foreign_yolo`).

Conventions: sizes are ``(height, width)`` in pixels; ``mean``/``std`` are per channel, in the
model's colour order, on the 0..1 scale (``x = (pixel / 255 - mean) / std``).
"""

from __future__ import annotations

import ast
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NewType

import numpy as np

from endoedge._version import __version__
from endoedge.errors import ModelFormatError

ResizeMode = Literal["stretch", "letterbox"]
ColorOrder = Literal["RGB", "BGR"]
# A decoder name: a key of ``endoedge.postprocess.DECODERS`` (detectors) or ``CLASSIFY_DECODER``.
# The registry, not this module, knows which names exist: a new decoder is one file and one line there.
DecoderName = NewType("DecoderName", str)
CLASSIFY_DECODER = DecoderName("classify")
# Output layouts of YOLO-style ONNX files (``--decoder``): see :func:`spec_for_foreign_yolo`.
YOLO_LAYOUTS = ("yolov8", "yolov5", "yolo_end2end")
PREFIX = "endoedge."
# Version of the ``endoedge.*`` metadata layout (key ``endoedge.schema``). Files without the key
# were written before it existed and read as version 1. A reader refuses a newer version.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PreprocessSpec:
    """How a source image becomes the network input.

    Attributes:
        input_size: network input ``(height, width)`` in pixels.
        resize: ``"stretch"`` (resize to input_size, aspect ratio not kept, as torchvision SSD)
            or ``"letterbox"`` (keep aspect ratio, pad centred with ``pad_value``, as Ultralytics).
        color: channel order the network expects.
        mean: per-channel mean on the 0..1 scale, in ``color`` order.
        std: per-channel standard deviation on the 0..1 scale, in ``color`` order.
        pad_value: letterbox border value (0..255, all channels).
    """

    input_size: tuple[int, int]
    resize: ResizeMode = "stretch"
    color: ColorOrder = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_value: int = 114


@dataclass(frozen=True)
class ModelSpec:
    """Everything besides the weights that running a detector needs.

    Attributes:
        arch: architecture name (an :mod:`endoedge.models` registry name, or e.g. ``"yolov8"``).
        class_names: foreground class names; class id ``i`` is ``class_names[i]``.
        preprocess: see :class:`PreprocessSpec`.
        decoder: ``"ssd"`` (raw box regressions + class logits + priors), ``"yolov8"``
            (``B x (4+nc) x A``: cxcywh in input pixels, class scores) or ``"yolov5"``
            (``B x A x (5+nc)``: cxcywh, objectness, class scores) or ``"classify"`` (a
            frame-level classifier: one ``B x nc`` output of logits, or probabilities when
            ``decoder_params["activation"]`` is ``"none"``; see :mod:`endoedge.classifier`).
        decoder_params: decoder-specific values (SSD: priors, box-coder weights, top-k).
        score_threshold: default minimum score of a reported detection (0..1).
        iou_threshold: default NMS IoU threshold (0..1), applied per class.
        max_detections: default maximum number of detections per image.
        producer: who wrote the file (``"endoedge"``, ``"ultralytics"``, ``"user"``).
        source_checkpoint: path of the checkpoint the ONNX was exported from, if known.
        source_sha256: sha256 of that checkpoint, if known.
        endoscopy: endoscopy frame cleaning the detector applies before pre-processing, as
            :meth:`~endoedge.endoscopy.EndoscopyConfig.to_dict` (``None`` = none; stored under
            ``endoedge.endoscopy`` only when set, so older readers and files are unaffected).
        stabilize: temporal stabilization for video (onset, hold, smoothing), as
            :meth:`~endoedge.spec.stabilize.StabilizeConfig.to_dict` (``None`` = the defaults;
            stored under ``endoedge.stabilize`` only when set).
        operating_point: how ``score_threshold`` was chosen, as
            :meth:`~endoedge.evaluation.operating.OperatingPoint.to_dict` (target and measured
            false-alarm share, sensitivity, the frames behind them; ``None`` = not recorded;
            stored under ``endoedge.operating_point`` only when set).
    """

    arch: str
    class_names: tuple[str, ...]
    preprocess: PreprocessSpec
    decoder: DecoderName | str
    decoder_params: Mapping[str, Any] = field(default_factory=dict)
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    producer: str = "endoedge"
    source_checkpoint: str | None = None
    source_sha256: str | None = None
    endoscopy: Mapping[str, Any] | None = None
    stabilize: Mapping[str, Any] | None = None
    operating_point: Mapping[str, Any] | None = None

    def _key(self) -> tuple[Any, ...]:
        """The spec as a tuple of hashable values (numpy arrays by dtype, shape and bytes)."""
        return (self.arch, self.class_names, self.preprocess, self.decoder, _frozen(self.decoder_params),
                self.score_threshold, self.iou_threshold, self.max_detections, self.producer,
                self.source_checkpoint, self.source_sha256, _frozen(self.endoscopy),
                _frozen(self.stabilize), _frozen(self.operating_point))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelSpec):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def with_thresholds(
        self,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> ModelSpec:
        """Return a copy with the given thresholds replaced (``None`` keeps the current value)."""
        out = replace(
            self,
            score_threshold=self.score_threshold if score_threshold is None else score_threshold,
            iou_threshold=self.iou_threshold if iou_threshold is None else iou_threshold,
            max_detections=self.max_detections if max_detections is None else max_detections,
        )
        validate_thresholds(out.score_threshold, out.iou_threshold, out.max_detections)
        return out

    # -- ONNX metadata_props --------------------------------------------------------------
    def to_metadata(self) -> dict[str, str]:
        """Serialize to string key/values for ONNX ``metadata_props`` (keys ``endoedge.*``)."""
        params = dict(self.decoder_params)
        if "priors" in params:
            priors = np.ascontiguousarray(params.pop("priors"), dtype="<f4")
            params["priors_b64"] = base64.b64encode(priors.tobytes()).decode("ascii")
            params["priors_shape"] = list(priors.shape)
        pp = self.preprocess
        meta = {
            "schema": str(SCHEMA_VERSION),
            "version": __version__,
            "producer": self.producer,
            "arch": self.arch,
            "class_names": json.dumps(list(self.class_names)),
            "input_size": json.dumps(list(pp.input_size)),
            "resize": pp.resize,
            "color_order": pp.color,
            "mean": json.dumps(list(pp.mean)),
            "std": json.dumps(list(pp.std)),
            "pad_value": str(pp.pad_value),
            "decoder": self.decoder,
            "decoder_params": json.dumps(params),
            "score_threshold": repr(float(self.score_threshold)),
            "iou_threshold": repr(float(self.iou_threshold)),
            "max_detections": str(int(self.max_detections)),
            "source_checkpoint": self.source_checkpoint or "",
            "source_sha256": self.source_sha256 or "",
        }
        if self.endoscopy is not None:
            meta["endoscopy"] = json.dumps(dict(self.endoscopy), sort_keys=True)
        if self.stabilize is not None:
            meta["stabilize"] = json.dumps(dict(self.stabilize), sort_keys=True)
        if self.operating_point is not None:
            meta["operating_point"] = json.dumps(dict(self.operating_point), sort_keys=True)
        return {PREFIX + k: v for k, v in meta.items()}

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], *, where: str = "model") -> ModelSpec:
        """Parse ``metadata_props`` written by :meth:`to_metadata` or by Ultralytics.

        Raises:
            ModelFormatError: neither endoedge nor Ultralytics metadata is present, or a value
                cannot be parsed.
        """
        if PREFIX + "decoder" in props:
            return _checked(_from_endoedge_metadata(props, where), where)
        if "names" in props and "imgsz" in props:
            return _checked(_from_ultralytics_metadata(props, where), where)
        raise ModelFormatError(
            f"{where} has no endoedge or Ultralytics metadata, so its pre-processing and output "
            "layout are unknown; re-export it with `endoedge export`, or describe it with "
            "--decoder yolov8|yolov5 --classes a,b,... [--imgsz N]"
        )


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """Return an ONNX file's ``metadata_props`` as a dict (weights stored externally are not read).

    Raises:
        ModelFormatError: the file is missing or not a parseable ONNX model.
    """
    return metadata_dict(load_onnx_proto(path), where=str(path))


def metadata_dict(model: Any, *, where: str = "model") -> dict[str, str]:
    """An ``onnx.ModelProto``'s ``metadata_props`` as a dict of text.

    Raises:
        ModelFormatError: a key or value is not UTF-8 text (protobuf hands such strings over as bytes).
    """
    props: dict[str, str] = {}
    for prop in model.metadata_props:
        key, value = prop.key, prop.value
        if not isinstance(key, str) or not isinstance(value, str):
            raise ModelFormatError(f"{where}: metadata entry {key[:40]!r} is not UTF-8 text; the file is damaged")
        props[key] = value
    return props


def load_onnx_proto(path: str | Path) -> Any:
    """The ``onnx.ModelProto`` of a file, without externally stored weights.

    Raises:
        ModelFormatError: the file is missing or not a parseable ONNX model, or names external
            data outside its folder (:func:`~endoedge.spec.external_data.check_external_data`).
    """
    import onnx

    from endoedge.spec.external_data import check_external_data

    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"model '{p}' does not exist or is not a file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ModelFormatError(f"'{p}' is not a readable ONNX file ({type(err).__name__})") from err
    check_graph_present(model, p)
    check_external_data(model, p)
    return model


def check_graph_present(model: Any, path: str | Path) -> None:
    """Raise :class:`ModelFormatError` when a parsed ``onnx.ModelProto`` holds no graph node.

    Protobuf parses an empty file (and some other non-ONNX bytes) as an empty model without
    complaint; without this check such a file would be reported as "no metadata" further on.
    """
    if len(model.graph.node) == 0:
        size = Path(path).stat().st_size
        raise ModelFormatError(
            f"'{path}' holds no ONNX graph ({size} bytes; an empty or truncated file?); "
            "re-export it with `endoedge export` or copy it again"
        )


def validate_thresholds(score: float, iou: float, max_det: int) -> None:
    """Raise :class:`~endoedge.errors.InputError` when a threshold is out of range."""
    from endoedge.errors import InputError

    if not 0.0 <= score <= 1.0:
        raise InputError(f"score_threshold (--conf) must be in [0, 1], got {score}")
    if not 0.0 <= iou <= 1.0:
        raise InputError(f"iou_threshold (--iou) must be in [0, 1], got {iou}")
    if max_det < 1:
        raise InputError(f"max_detections (--max-det) must be >= 1, got {max_det}")


def _from_endoedge_metadata(props: Mapping[str, str], where: str) -> ModelSpec:
    def get(key: str) -> str:
        try:
            return props[PREFIX + key]
        except KeyError:
            raise ModelFormatError(
                f"{where}: endoedge metadata key '{PREFIX + key}' is missing; re-export the model "
                "with `endoedge export`"
            ) from None

    _check_schema(props.get(PREFIX + "schema"), props.get(PREFIX + "version"), where)
    try:
        params = json.loads(get("decoder_params"))
        if not isinstance(params, dict):
            raise ValueError("decoder_params is not a JSON object")
        if "priors_b64" in params:
            raw = base64.b64decode(params.pop("priors_b64"))
            shape = tuple(params.pop("priors_shape"))
            params["priors"] = np.frombuffer(raw, dtype="<f4").reshape(shape)
        h, w = json.loads(get("input_size"))
        pp = PreprocessSpec(
            input_size=(int(h), int(w)),
            resize=_choice(get("resize"), ("stretch", "letterbox"), "resize"),  # type: ignore[arg-type]
            color=_choice(get("color_order"), ("RGB", "BGR"), "color_order"),  # type: ignore[arg-type]
            mean=_triple(json.loads(get("mean"))),
            std=_triple(json.loads(get("std"))),
            pad_value=int(props.get(PREFIX + "pad_value", "114")),
        )
        return ModelSpec(
            arch=get("arch"),
            class_names=tuple(str(c) for c in json.loads(get("class_names"))),
            preprocess=pp,
            decoder=_decoder_name(get("decoder")),
            decoder_params=params,
            score_threshold=float(get("score_threshold")),
            iou_threshold=float(get("iou_threshold")),
            max_detections=int(get("max_detections")),
            producer=props.get(PREFIX + "producer", "endoedge"),
            source_checkpoint=props.get(PREFIX + "source_checkpoint") or None,
            source_sha256=props.get(PREFIX + "source_sha256") or None,
            endoscopy=_config(props.get(PREFIX + "endoscopy"), "endoscopy", where),
            stabilize=_config(props.get(PREFIX + "stabilize"), "stabilize", where),
            operating_point=_operating_point(props.get(PREFIX + "operating_point")),
        )
    except ModelFormatError:
        raise
    except (ValueError, TypeError, KeyError, RecursionError) as err:  # RecursionError: deeply nested JSON
        raise ModelFormatError(
            f"{where}: endoedge metadata cannot be parsed ({_short(err)}); re-export the model"
        ) from err


def _operating_point(text: str | None) -> dict[str, Any] | None:
    """Parse the optional ``endoedge.operating_point`` JSON object (absent in older files)."""
    if not text:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("endoedge.operating_point is not a JSON object")
    return value


def _config(text: str | None, key: str, where: str) -> dict[str, Any] | None:
    """Parse and validate an optional JSON config (``endoedge.endoscopy``, ``endoedge.stabilize``;
    absent in older files) through its dataclass."""
    if not text:
        return None
    from endoedge.errors import InputError
    from endoedge.spec.endoscopy import EndoscopyConfig
    from endoedge.spec.stabilize import StabilizeConfig

    kinds: dict[str, type[EndoscopyConfig] | type[StabilizeConfig]] = {
        "endoscopy": EndoscopyConfig, "stabilize": StabilizeConfig}
    try:
        return kinds[key].from_dict(json.loads(text)).to_dict()
    except (InputError, ValueError, AttributeError, TypeError, RecursionError) as err:
        raise ModelFormatError(f"{where}: {PREFIX}{key} metadata is invalid ({_short(err)})") from err


def _from_ultralytics_metadata(props: Mapping[str, str], where: str) -> ModelSpec:
    """Ultralytics writes Python-literal strings: names "{0: 'polyp'}", imgsz "[320, 320]"."""
    try:
        task = props.get("task", "detect")
        if task != "detect":
            raise ModelFormatError(
                f"{where} is an Ultralytics {task[:40]!r} model; endoedge runs detection models only"
            )
        names = ast.literal_eval(props["names"])
        imgsz = ast.literal_eval(props["imgsz"])
        if isinstance(imgsz, int):
            imgsz = [imgsz, imgsz]
        if not isinstance(imgsz, list | tuple) or len(imgsz) not in (1, 2):
            raise ValueError(f"imgsz {props['imgsz'][:40]!r} is not N or [H, W]")
        size = (int(imgsz[0]), int(imgsz[-1]))
        if not isinstance(names, dict):
            raise ValueError("names is not a {id: name} dict")
        # YOLO26 / YOLOv10 exported NMS-free (nms=False): one B x 300 x 6 output, no NMS needed
        end2end = bool(ast.literal_eval(props.get("end2end", "False")))
        class_names = tuple(str(names[i]) for i in sorted(names))
    except ModelFormatError:
        raise
    except (ValueError, SyntaxError, KeyError, TypeError, RecursionError, MemoryError) as err:
        raise ModelFormatError(f"{where}: Ultralytics metadata cannot be parsed ({_short(err)})") from err
    return spec_for_foreign_yolo(
        "yolo_end2end" if end2end else "yolov8", class_names, size, producer="ultralytics",
        arch=_ultralytics_arch(props.get("description", "")),
    )


def _ultralytics_arch(description: str) -> str:
    """'Ultralytics YOLOv8n model ' -> 'YOLOv8n' (or 'ultralytics' when there is no name)."""
    words = [w for w in description.split() if w not in ("Ultralytics", "model")]
    return words[0] if words else "ultralytics"


def spec_for_foreign_yolo(
    layout: str,
    class_names: tuple[str, ...],
    input_size: tuple[int, int],
    *,
    producer: str = "user",
    arch: str | None = None,
) -> ModelSpec:
    """Describe a YOLO-style ONNX with Ultralytics' pre-processing (letterbox 114, RGB, /255).

    Args:
        layout: ``"yolov8"`` (``B x (4+nc) x A``), ``"yolov5"`` (``B x A x (5+nc)``) or
            ``"yolo_end2end"`` (NMS-free YOLO26/YOLOv10 heads: ``B x K x 6`` xyxy, score, class).
        class_names: the model's class names in class-id order.
        input_size: network input ``(height, width)``.
    """
    if layout not in YOLO_LAYOUTS:
        raise ModelFormatError(f"unknown YOLO layout '{layout}'; known: {', '.join(YOLO_LAYOUTS)}")
    if not class_names:
        raise ModelFormatError("a YOLO model needs at least one class name (--classes a,b,...)")
    return ModelSpec(
        arch=arch or layout,
        class_names=tuple(class_names),
        preprocess=PreprocessSpec(input_size=input_size, resize="letterbox", color="RGB"),
        decoder=layout,
        decoder_params={},
        score_threshold=0.25,
        iou_threshold=0.45 if layout == "yolov5" else 0.7,  # unused by the NMS-free head
        max_detections=300,
        producer=producer,
    )


#: The largest network input side endoedge accepts from metadata, in pixels.
MAX_INPUT_SIDE = 16384


def _checked(spec: ModelSpec, where: str) -> ModelSpec:
    """Refuse parsed metadata whose values are out of range (sizes, thresholds, pad value)."""
    from endoedge.errors import InputError

    h, w = spec.preprocess.input_size
    if not (0 < h <= MAX_INPUT_SIDE and 0 < w <= MAX_INPUT_SIDE):
        raise ModelFormatError(f"{where}: metadata input size {h} x {w} is out of range (1..{MAX_INPUT_SIDE} px)")
    if not 0 <= spec.preprocess.pad_value <= 255:
        raise ModelFormatError(f"{where}: metadata pad_value {spec.preprocess.pad_value} is not 0..255")
    try:
        validate_thresholds(spec.score_threshold, spec.iou_threshold, spec.max_detections)
    except InputError as err:
        raise ModelFormatError(f"{where}: metadata {err}") from err
    return spec


def _short(err: BaseException) -> str:
    """An exception as one short line (a parser's message may quote a long or multi-line value)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _check_schema(text: str | None, writer: str | None, where: str) -> None:
    """Refuse metadata written in a newer ``endoedge.schema`` than this reader knows."""
    if not text:
        return  # written before the key existed: version 1
    try:
        version = int(text)
    except ValueError:
        raise ModelFormatError(f"{where}: metadata 'endoedge.schema' is {text[:40]!r}, not a whole number") from None
    if version > SCHEMA_VERSION:  # (a huge number is refused here too)
        by = f" (written by endoedge {writer})" if writer else ""
        raise ModelFormatError(
            f"{where} uses metadata schema {version}{by}, but this endoedge {__version__} reads up to "
            f"schema {SCHEMA_VERSION}; upgrade endoedge (pip install -U endoedge) or re-export the model with this one"
        )


def _decoder_name(value: str) -> DecoderName:
    """A decoder name as written; whether it is registered is checked when the decoder is built."""
    if not value or not value.replace("_", "").replace("-", "").isalnum():
        raise ModelFormatError(f"metadata 'decoder' is {value[:40]!r}; expected a decoder name such as ssd or yolov8")
    return DecoderName(value)


def _frozen(value: Any) -> Any:
    """A hashable, comparable stand-in for a metadata value (dicts, lists, numpy arrays)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _choice(value: str, allowed: tuple[str, ...], key: str) -> str:
    if value not in allowed:
        raise ModelFormatError(f"metadata '{key}' is {value[:40]!r}; expected one of {', '.join(allowed)}")
    return value


def _triple(values: Any) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"expected 3 per-channel values, got {str(values)[:80]!r}")
    return (float(values[0]), float(values[1]), float(values[2]))
