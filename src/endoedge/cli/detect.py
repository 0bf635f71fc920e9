"""``endoedge detect SOURCE... --model M -o OUT``: images -> annotated PNGs + detections JSONL."""

from __future__ import annotations

import argparse
import glob
import json
import logging
import statistics
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from endoedge.cli._common import (
    add_model_options,
    int_at_least,
    load_detector,
    open_output,
    prepare_output_dir,
)
from endoedge.data.imageio import IMAGE_SUFFIXES
from endoedge.data.walk import unique_files, walk_files
from endoedge.errors import EndoedgeError, InputError

if TYPE_CHECKING:
    from endoedge.cli._common import SubParsers
    from endoedge.detector import Detector

logger = logging.getLogger(__name__)


def add_parser(sub: SubParsers) -> None:
    """Register the ``detect`` subcommand."""
    p = sub.add_parser(
        "detect",
        help="detect in images, folders or globs; write annotated PNGs and a JSONL",
        description="Run a detector over images. Writes OUT/detections.jsonl (one record per "
        "image, flushed as it goes; boxes xyxy in source pixels) and OUT/annotated/*.png. An "
        "unreadable image gets an error record and the run goes on; the exit status is 1 if "
        "any image failed.",
    )
    p.add_argument("sources", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--no-images", action="store_true", help="write only the JSONL")
    p.add_argument("--warmup", type=int_at_least(0), default=2, help="untimed runs on the first readable image (default 2)")
    p.add_argument("--show", type=int, default=3, help="print the N best detections per image (default 3)")
    add_model_options(p)
    p.set_defaults(func=run)


def expand_sources(sources: Sequence[str]) -> list[Path]:
    """Files, folders (recursive, image suffixes) and globs -> sorted unique image paths.

    Raises:
        InputError: a source matches nothing.
    """
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = walk_files(p, suffixes=IMAGE_SUFFIXES)
        elif p.is_file():
            found = [p]
        else:
            found = unique_files(sorted(Path(f) for f in glob.glob(src, recursive=True) if Path(f).is_file()))
        if not found:
            raise InputError(f"'{src}' matches no image file (looked for {', '.join(IMAGE_SUFFIXES)})")
        out.extend(found)
    return list(dict.fromkeys(out))


def _unique_names(paths: Sequence[Path]) -> Iterator[tuple[Path, str]]:
    """Pair each path with an output stem no other path uses (``a``, ``a_1``, ...)."""
    used: set[str] = set()
    for p in paths:
        name, n = p.stem, 0
        while name in used:
            n += 1
            name = f"{p.stem}_{n}"
        used.add(name)
        yield p, name


def _warm_up(det: Detector, paths: Sequence[Path], n: int) -> None:
    """Run ``n`` untimed detections so the first reported latency is not a cold start."""
    from endoedge.data.imageio import read_image

    for path in paths:
        try:
            image = read_image(path)
        except EndoedgeError:
            continue
        for _ in range(max(0, n)):
            det.detect(image)
        return


def run(args: argparse.Namespace) -> int:
    """Detect in every image; see the subcommand's description."""
    import cv2

    from endoedge.data.imageio import read_image
    from endoedge.render import draw_detections

    paths = expand_sources(args.sources)
    out = prepare_output_dir(args.output)
    annotated = prepare_output_dir(out / "annotated")
    failures = 0
    totals: list[float] = []
    with load_detector(args) as det, open_output(out / "detections.jsonl") as jsonl:
        logger.info("%r", det)
        _warm_up(det, paths, args.warmup)
        for path, name in _unique_names(paths):
            try:
                image = read_image(path)
                if det.cleaner is not None:
                    det.cleaner.reset()  # independent images: find each one's field of view
                result = det.detect(image)
            except EndoedgeError as err:
                failures += 1
                logger.warning("%s", err)
                jsonl.write(json.dumps({"path": str(path), "error": str(err)}) + "\n")
                jsonl.flush()
                continue
            t = det.timings
            totals.append(t.total)
            record = {
                "path": str(path),
                "width": image.shape[1],
                "height": image.shape[0],
                "detections": result.to_records(),
                **result.frame_record(),
                "latency_ms": {"preprocess": round(t.preprocess, 3), "infer": round(t.infer, 3),
                               "postprocess": round(t.postprocess, 3)},
            }
            if det.cleaner is not None:
                record["latency_ms"]["clean"] = round(t.clean, 3)
            jsonl.write(json.dumps(record) + "\n")
            jsonl.flush()
            if not args.no_images and not cv2.imwrite(str(annotated / f"{name}.png"),
                                                      draw_detections(image, result)):
                raise InputError(f"cannot write '{annotated / (name + '.png')}' (disk full or read-only?)")
            clean = f"clean {t.clean:.1f}, " if det.cleaner is not None else ""
            print(f"{path}: {len(result)} detections, {t.total:.1f} ms "
                  f"({clean}pre {t.preprocess:.1f}, infer {t.infer:.1f}, post {t.postprocess:.1f})")
            for d in record["detections"][: max(0, args.show)]:
                print(f"    {d['label']:>10} {d['score']:.3f}  box {d['box']}")
    done = len(paths) - failures
    median = f", median {statistics.median(totals):.1f} ms/image" if totals else ""
    print(f"{done}/{len(paths)} images processed{median}; results in {out / 'detections.jsonl'}")
    if failures:
        print(f"endoedge detect: error: {failures} image(s) could not be processed (error records in the JSONL)",
              file=sys.stderr)
        return 1
    return 0
