"""Detection datasets: Kvasir-SEG layout, COCO json, YOLO txt folders; fixed splits; RAM cache.

Every parser returns a :class:`Dataset`: one :class:`Sample` per image with boxes as ``n x 4``
float32 **xyxy in source-image pixels** and 0-based foreground class indices (background is
implicit and added by the loss). Images are read later, by :func:`load_cache`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from endoedge.data.media import IMAGE_SUFFIXES
from endoedge.data.walk import walk_files
from endoedge.errors import InputError

logger = logging.getLogger(__name__)

KVASIR_JSON = "kavsir_bboxes.json"  # sic: the file name Kvasir-SEG ships


@dataclass
class Sample:
    """One image and its ground truth.

    Attributes:
        stem: image id (file name without suffix), used by split files.
        path: the image file.
        boxes: ``n x 4`` float32 xyxy in source-image pixels.
        labels: ``n`` int64 0-based foreground class indices.
        size: source ``(height, width)`` in pixels when the annotation says, else ``None``.
    """

    stem: str
    path: Path
    boxes: np.ndarray
    labels: np.ndarray
    size: tuple[int, int] | None = None


@dataclass
class Dataset:
    """Samples plus class names (foreground only, in label order)."""

    samples: list[Sample]
    class_names: tuple[str, ...]
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    def subset(self, stems: Sequence[str]) -> Dataset:
        """The samples whose stems are listed, in the list's order.

        Raises:
            InputError: a listed stem is not in the dataset.
        """
        by_stem = {s.stem: s for s in self.samples}
        missing = [s for s in stems if s not in by_stem]
        if missing:
            raise InputError(f"{len(missing)} split entries are not in {self.source}: {missing[:3]}")
        return Dataset([by_stem[s] for s in stems], self.class_names, self.source, dict(self.meta))


def _boxes(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def _valid(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def load_kvasir(root: str | Path) -> Dataset:
    """Kvasir-SEG layout: ``root/images/<id>.jpg`` and ``root/kavsir_bboxes.json``
    (``{id: {"height", "width", "bbox": [{"label", "xmin", "ymin", "xmax", "ymax"}]}}``)."""
    root = Path(root)
    ann_path = root / KVASIR_JSON
    try:
        ann = json.loads(ann_path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read Kvasir annotations {ann_path}: {err}") from err
    try:
        return _kvasir_dataset(ann, root)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"missing key {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise InputError(f"Kvasir annotations {ann_path} are malformed ({what}); each image id needs height, width "
                         "and bbox: a list of {label, xmin, ymin, xmax, ymax}") from err


def _kvasir_dataset(ann: Any, root: Path) -> Dataset:
    """:func:`load_kvasir`'s parse of the decoded json (a missing key raises ``KeyError``)."""
    names: list[str] = []
    samples = []
    for stem in sorted(ann):
        entry = ann[stem]
        rows, labels = [], []
        for b in entry.get("bbox", []):
            if b["label"] not in names:
                names.append(b["label"])
            rows.append([b["xmin"], b["ymin"], b["xmax"], b["ymax"]])
            labels.append(names.index(b["label"]))
        path = _find_image(root / "images", stem)
        boxes = _boxes(rows)
        keep = _valid(boxes)
        samples.append(Sample(stem, path, boxes[keep], np.asarray(labels, np.int64)[keep],
                              (int(entry["height"]), int(entry["width"]))))
    return Dataset(samples, tuple(names), str(root))


def _find_image(folder: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    raise InputError(f"no image for '{stem}' in {folder}")


def load_coco(json_path: str | Path, images_dir: str | Path | None = None) -> Dataset:
    """COCO detection json (``images``, ``annotations`` with xywh ``bbox``, ``categories``).

    Images are looked up under ``images_dir``, else the json's folder, else its ``images/``.
    Crowd annotations are ignored. Category ids map to 0-based labels in ``categories`` order.
    """
    json_path = Path(json_path)
    try:
        coco = json.loads(json_path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read COCO json {json_path}: {err}") from err
    try:
        return _coco_dataset(coco, json_path, images_dir)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"missing key {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise InputError(f"COCO json {json_path} is malformed ({what}); it needs images (id, file_name), "
                         "annotations (image_id, category_id, bbox as x, y, w, h) and categories (id, name)") from err


def _coco_dataset(coco: Any, json_path: Path, images_dir: str | Path | None) -> Dataset:
    """:func:`load_coco`'s parse of the decoded json (a missing key raises ``KeyError``)."""
    cats = coco.get("categories", [])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict[int, list[dict]] = {}
    for a in coco.get("annotations", []):
        if not a.get("iscrowd", 0):
            per_image.setdefault(a["image_id"], []).append(a)
    dirs = [Path(images_dir)] if images_dir else [json_path.parent, json_path.parent / "images"]
    samples = []
    for img in coco.get("images", []):
        path = next((d / img["file_name"] for d in dirs if (d / img["file_name"]).is_file()), None)
        if path is None:
            raise InputError(f"image '{img['file_name']}' of {json_path} not found in {dirs}")
        anns = per_image.get(img["id"], [])
        boxes = _boxes([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        unknown = {a["category_id"] for a in anns} - cat_index.keys()
        if unknown:
            raise InputError(f"COCO json {json_path}: annotations of image {img['id']} use category_id "
                             f"{sorted(unknown, key=str)} that categories does not list (ids {sorted(cat_index, key=str)})")
        labels = np.asarray([cat_index[a["category_id"]] for a in anns], np.int64)
        keep = _valid(boxes)
        size = (int(img["height"]), int(img["width"])) if "height" in img else None
        samples.append(Sample(Path(img["file_name"]).stem, path, boxes[keep], labels[keep], size))
    return Dataset(samples, tuple(str(c["name"]) for c in cats), str(json_path))


def load_yolo(root: str | Path, class_names: Sequence[str] | None = None) -> Dataset:
    """YOLO txt layout: ``root/images/*.jpg`` and ``root/labels/<stem>.txt`` with lines
    ``class cx cy w h`` (normalized to 0..1). Class names from ``class_names``, else
    ``root/classes.txt`` (one a line), else ``class0, class1, ...``. Needs each image's size,
    so it reads image headers with OpenCV."""
    import cv2

    root = Path(root)
    img_dir, lab_dir = root / "images", root / "labels"
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise InputError(f"YOLO dataset {root} needs images/ and labels/ folders")
    images = walk_files(img_dir, suffixes=IMAGE_SUFFIXES)
    samples = []
    max_label = -1
    for path in images:
        rel = path.relative_to(img_dir).with_suffix(".txt")
        txt = lab_dir / rel
        try:
            rows = (np.loadtxt(txt, dtype=np.float32, ndmin=2) if txt.is_file() and txt.stat().st_size
                    else np.zeros((0, 5), np.float32))
        except ValueError as err:
            raise InputError(f"{txt}: {str(err).splitlines()[0].rstrip('.')}; expected 'class cx cy w h' numbers "
                             "per line") from err
        if rows.shape[1] < 5:
            raise InputError(f"{txt}: expected 'class cx cy w h' per line")
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise InputError(f"cannot read image {path}")
        h, w = img.shape[:2]
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
        labels = rows[:, 0].astype(np.int64)
        max_label = max(max_label, int(labels.max(initial=-1)))
        keep = _valid(boxes)
        samples.append(Sample(path.stem, path, boxes[keep], labels[keep], (h, w)))
    if class_names is None:
        names_file = root / "classes.txt"
        if names_file.is_file():
            class_names = [ln.strip() for ln in names_file.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        else:
            class_names = [f"class{i}" for i in range(max_label + 1)]
    if max_label >= len(class_names):
        raise InputError(f"YOLO labels use class {max_label} but only {len(class_names)} names are known")
    return Dataset(samples, tuple(class_names), str(root))


def load_dataset(path: str | Path, fmt: str = "auto", *, images_dir: str | Path | None = None,
                 class_names: Sequence[str] | None = None) -> Dataset:
    """Parse a dataset; ``fmt`` is ``kvasir``, ``coco``, ``yolo`` or ``auto`` (detected from the
    layout: a ``.json`` file is COCO, a folder with ``kavsir_bboxes.json`` Kvasir, a folder with
    ``labels/`` YOLO)."""
    p = Path(path)
    if fmt == "auto":
        if p.is_file() and p.suffix == ".json":
            fmt = "coco"
        elif (p / KVASIR_JSON).is_file():
            fmt = "kvasir"
        elif (p / "labels").is_dir():
            fmt = "yolo"
        else:
            raise InputError(
                f"cannot tell the dataset layout of {p}: expected a COCO .json, a folder with "
                f"{KVASIR_JSON}, or a YOLO folder with images/ and labels/"
            )
    if fmt == "kvasir":
        return load_kvasir(p)
    if fmt == "coco":
        return load_coco(p, images_dir)
    if fmt == "yolo":
        return load_yolo(p, class_names)
    raise InputError(f"unknown dataset format '{fmt}' (kvasir, coco, yolo, auto)")


def load_negatives(folders: Sequence[str | Path], class_names: Sequence[str]) -> Dataset:
    """Polyp-free frames: every image under each folder (recursively, sorted), no boxes.

    Stems are ``<folder name>/<path inside it without suffix>`` so frames of different sequences
    never collide. ``class_names`` are those of the boxed set the negatives go with.

    Raises:
        InputError: a folder is missing or holds no image.
    """
    samples = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"negatives folder '{root}' does not exist or is not a folder")
        images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"negatives folder '{root}' holds no image ({', '.join(IMAGE_SUFFIXES)})")
        for p in images:
            stem = f"{root.name}/{p.relative_to(root).with_suffix('').as_posix()}"
            samples.append(Sample(stem, p, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
    return Dataset(samples, tuple(class_names), ", ".join(str(f) for f in folders))


def read_split(split: str | Path) -> tuple[list[str], list[str]]:
    """Train and val stems from a split folder holding exactly one ``*_train.txt`` and one
    ``*_val.txt`` (one image stem a line; ``#`` comments and blank lines ignored)."""
    d = Path(split)
    if d.is_file():
        raise InputError(f"split '{d}' is a file; give the folder that holds one *_train.txt and one *_val.txt "
                         f"(e.g. '{d.parent}')")
    if not d.is_dir():
        raise InputError(f"split folder '{d}' does not exist; give a folder holding one *_train.txt and one *_val.txt")
    lists = []
    for part in ("train", "val"):
        found = sorted(d.glob(f"*_{part}.txt"))
        if len(found) != 1:
            names = f" ({', '.join(f.name for f in found)})" if found else ""
            raise InputError(f"split folder '{d}' needs exactly one *_{part}.txt, found {len(found)}{names}; "
                             "keep one train and one val list there")
        lines = [ln.split("#")[0].strip() for ln in found[0].read_text(encoding="utf-8-sig").splitlines()]
        lists.append([ln for ln in lines if ln])
    overlap = set(lists[0]) & set(lists[1])
    if overlap:
        raise InputError(f"split {d}: {len(overlap)} stems are in both train and val")
    return lists[0], lists[1]


def random_split(stems: Sequence[str], n_val: int, seed: int) -> tuple[list[str], list[str]]:
    """Sorted stems split by a seeded permutation into ``(train, val)``, each list sorted."""
    order = np.random.default_rng(seed).permutation(sorted(stems))
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


@dataclass
class CachedImages:
    """Images resized once and kept in RAM.

    Attributes:
        images: ``N x S x S x 3`` uint8 RGB, stretched to ``S x S``.
        boxes: per image, ``n x 4`` float32 xyxy in the cached ``S x S`` pixels.
        labels: per image, ``n`` int64 0-based.
        sizes: per image, source ``(height, width)`` (after the transform, if any).
        crops: per image, the source rectangle ``(x0, y0, x1, y1)`` the cached image shows (the
            whole image without a transform; a transform's crop otherwise), for data that must
            follow the crop (masks).
    """

    images: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    sizes: list[tuple[int, int]]
    crops: list[tuple[int, int, int, int]] = field(default_factory=list)


class FrameTransform(Protocol):
    """What :func:`load_cache` may apply to each decoded frame before resizing it, e.g. an
    endoscopy :class:`~endoedge.endoscopy.FrameCleaner` (field-of-view crop, OSD mask), so that
    training sees frames as the deployed detector does."""

    def __call__(self, bgr: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """``H x W x 3`` uint8 BGR -> (the transformed frame, the source pixel ``(x, y)`` of its
        top-left corner)."""
        ...


def load_cache(dataset: Dataset, size: int, transform: FrameTransform | None = None) -> CachedImages:
    """Read every image (RGB), stretch it to ``size x size`` (INTER_AREA) and scale its boxes.

    With ``transform`` each decoded frame goes through it first (a crop: boxes move by the
    returned offset and are clipped to the crop; a box left with no area is dropped with its
    label), and ``sizes`` holds the transformed frame's size.
    """
    import cv2

    n = len(dataset.samples)
    images = np.empty((n, size, size, 3), np.uint8)
    boxes, labels, sizes, crops = [], [], [], []
    for i, s in enumerate(dataset.samples):
        bgr = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"cannot read image {s.path}")
        b, lab = s.boxes, s.labels
        ox = oy = 0
        if transform is not None:
            bgr, (ox, oy) = transform(bgr)
            h, w = bgr.shape[:2]
            b = np.clip(b - np.array([ox, oy, ox, oy], np.float32), 0, [w, h, w, h]).astype(np.float32)
            keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            b, lab = b[keep], lab[keep]
        h, w = bgr.shape[:2]
        images[i] = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)[..., ::-1]
        scale = np.array([size / w, size / h, size / w, size / h], np.float32)
        boxes.append((b * scale).astype(np.float32))
        labels.append(lab)
        sizes.append((h, w))
        crops.append((int(ox), int(oy), int(ox) + w, int(oy) + h))
    return CachedImages(images, boxes, labels, sizes, crops)


def read_stems(path: str | Path) -> list[str]:
    """Image stems of a split file (one a line; ``#`` comments and blank lines ignored).

    Raises:
        InputError: the file cannot be read or lists no stem.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except OSError as err:
        raise InputError(f"cannot read split file '{p}': {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise InputError(f"split file '{p}' is not UTF-8 text (byte {err.start}); one image stem a line") from err
    stems = [s for s in (ln.split("#")[0].strip() for ln in lines) if s]
    if not stems:
        raise InputError(f"split file '{p}' lists no image stems")
    return list(dict.fromkeys(stems))
