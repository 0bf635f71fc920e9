"""Fuzz targets: each takes the fuzzer's bytes and feeds them to one endoedge parser.

A target returns normally, or raises an :class:`~endoedge.errors.EndoedgeError` (the one-line
error the CLI prints). Anything else escaping it (``ValueError``, ``RecursionError``,
``UnicodeDecodeError``, ...) is a bug: the fuzzer reports it as a crash. Targets also check
invariants of what the parser returns. This module needs no atheris: the regression test replays
``regressions/<target>/*`` and the seeds through these functions.

Targets (``TARGETS``):

- ``onnx_metadata``: the bytes of an ONNX file (``ModelProto``), or of a metadata table
  (``key<TAB>value`` lines, ``\\n`` in a value written ``\\\\n``) -> :meth:`ModelSpec.from_metadata`
  (``endoedge.*`` keys and Ultralytics metadata), plus the external-data location check.
- ``engine_manifest``: a TensorRT engine manifest (``<engine>.json``) -> ``load_manifest``.
- ``batch_jsonl``: a results file to resume -> ``scan_results`` (torn last line repaired).
- ``image_decode``: an image file -> ``decode_bytes`` (batch) and ``read_image`` (run/detect).
- ``list_file``: a list / CSV / split file -> batch ``open_source`` and ``read_stems``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from endoedge.errors import EndoedgeError

_TMP = Path(tempfile.mkdtemp(prefix="endoedge-fuzz-"))
atexit.register(shutil.rmtree, _TMP, True)  # the scratch files of the targets
#: The pixel budget the image target decodes with (small: a fuzzer must not allocate gigabytes).
MAX_PIXELS = 4_000_000


def expect(condition: object, what: str) -> None:
    """An invariant of a parser's result (not ``assert``: kept under ``python -O``)."""
    if not condition:
        raise AssertionError(what)


def _write(name: str, data: bytes) -> Path:
    path = _TMP / name
    path.write_bytes(data)
    return path


def metadata_table(props: dict[str, str]) -> bytes:
    """``props`` in the ``onnx_metadata`` target's table format (used to write seeds)."""
    return "".join(f"{k}\t{v.replace(chr(10), chr(92) + 'n')}\n" for k, v in props.items()).encode()


def _parse_table(data: bytes) -> dict[str, str]:
    props = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, _, value = line.partition("\t")
        if key:
            props[key] = value.replace("\\n", "\n")
    return props


def onnx_metadata(data: bytes) -> None:
    """ONNX ``ModelProto`` bytes (first byte 0x08, ``ir_version``) or a metadata table."""
    from endoedge.spec import ModelSpec, metadata_dict
    from endoedge.spec.external_data import check_external_data

    if data[:1] == b"\x08":
        import onnx
        from google.protobuf.message import DecodeError

        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except (DecodeError, RuntimeWarning):
            return  # not a protobuf: load_onnx_proto reports it as a ModelFormatError
        check_external_data(model, _TMP / "model" / "model.onnx")
        props = metadata_dict(model, where="fuzz")
    else:
        props = _parse_table(data)
    spec = ModelSpec.from_metadata(props, where="fuzz")
    h, w = spec.preprocess.input_size
    expect(h > 0 and w > 0, f"input size {spec.preprocess.input_size}")
    again = ModelSpec.from_metadata(spec.to_metadata(), where="round trip")
    expect(again == spec, "to_metadata/from_metadata round trip changed the spec")


def engine_manifest(data: bytes) -> None:
    """An ``<engine>.json`` manifest, full and partial reads."""
    from endoedge.tensorrt.manifest import load_manifest

    path = _write("e.engine.json", data)
    for partial in (False, True):
        load_manifest(path, engine=_TMP / "e.engine", partial=partial)


def batch_jsonl(data: bytes) -> None:
    """A results file being resumed; after the repair a second scan finds the same records."""
    from endoedge.batch.results import scan_results

    path = _write("r.jsonl", data)
    first = scan_results(path, repair=True)
    expect(path.stat().st_size == len(data) - first.repaired_bytes, "repair cut the wrong length")
    second = scan_results(path, repair=True)
    expect(second.repaired_bytes == 0, "a repaired file needed another repair")
    expect(second.keys == first.keys, "the repair lost or added records")


def image_decode(data: bytes) -> None:
    """Image bytes: the batch decoder under a pixel budget, then read_image on the same file."""
    from endoedge.batch.decode import decode_bytes
    from endoedge.data.imageio import read_image

    try:
        dec = decode_bytes(np.frombuffer(data, np.uint8), max_pixels=MAX_PIXELS)
    except EndoedgeError:
        pass
    else:
        h, w = dec.image.shape[:2]
        expect(dec.image.dtype == np.uint8 and dec.image.ndim == 3 and dec.image.shape[2] == 3, "not BGR8")
        expect(h * w <= MAX_PIXELS, f"decoded {w} x {h} over the pixel budget")
        expect(dec.width > 0 and dec.height > 0, "empty source size")
    image = read_image(_write("i.img", data))
    expect(image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, "read_image: not BGR8")


def list_file(data: bytes) -> None:
    """A batch list (``.txt`` and ``.csv``) and a split file."""
    from endoedge.batch.sources import open_source
    from endoedge.data.datasets import read_stems

    for suffix in (".txt", ".csv"):
        try:
            src = open_source(_write("list" + suffix, data))
        except EndoedgeError:
            continue
        expect(src.kind == "list" and src.items, "a list source without items")
        expect(len({it.key for it in src.items}) == len(src.items), "two inputs share a key")
    stems = read_stems(_write("split.txt", data))
    expect(stems and all(s and "#" not in s and s == s.strip() for s in stems), f"bad stems {stems[:3]}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "onnx_metadata": onnx_metadata,
    "engine_manifest": engine_manifest,
    "batch_jsonl": batch_jsonl,
    "image_decode": image_decode,
    "list_file": list_file,
}


def run_one(name: str, data: bytes) -> None:
    """Run target ``name`` on ``data``; an EndoedgeError (the one-line error) is a pass."""
    try:
        TARGETS[name](data)
    except EndoedgeError as err:
        text = str(err)
        expect(text and "\n" not in text, f"not a one-line error: {text!r}")

