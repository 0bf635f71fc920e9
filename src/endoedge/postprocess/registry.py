"""Decoders by name: ``ModelSpec.decoder`` -> decoder class. A new decoder is one file and one line here."""

from __future__ import annotations

from collections.abc import Callable

from endoedge.errors import ModelFormatError
from endoedge.postprocess.base import Decoder
from endoedge.postprocess.ssd import SSDDecoder
from endoedge.postprocess.yolo import YoloDecoder
from endoedge.postprocess.yolo_end2end import YoloEnd2EndDecoder
from endoedge.spec import CLASSIFY_DECODER, ModelSpec

DECODERS: dict[str, Callable[[ModelSpec, tuple[str, ...]], Decoder]] = {
    "ssd": SSDDecoder,
    "yolov8": YoloDecoder,
    "yolov5": YoloDecoder,
    "yolo_end2end": YoloEnd2EndDecoder,
}


def decoder_names() -> list[str]:
    """The registered detection decoders, sorted."""
    return sorted(DECODERS)


def make_decoder(spec: ModelSpec, output_names: tuple[str, ...]) -> Decoder:
    """Build the decoder the spec names, for a model with the given output names.

    Raises:
        ModelFormatError: the spec names a frame classifier or an unknown decoder (the message
            lists the known ones).
    """
    if spec.decoder == CLASSIFY_DECODER:
        raise ModelFormatError(
            f"'{spec.arch}' is a frame classifier, not a detector; load it with "
            "endoedge.load_classifier() (`endoedge batch` runs classifiers and detectors)"
        )
    try:
        cls = DECODERS[spec.decoder]
    except KeyError:
        raise ModelFormatError(
            f"unknown decoder '{spec.decoder}'; known: {', '.join(decoder_names())}"
        ) from None
    return cls(spec, output_names)
