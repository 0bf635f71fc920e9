"""The endoedge checkpoint: one ``torch.save`` file with the weights and what they mean.

Layout (a plain dict, loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "endoedge-checkpoint", "format_version": 1,
     "arch": "ssdlite320_mobilenet_v3_large", "class_names": ["polyp"],
     "input_size": [320, 320], "mean": [...], "std": [...],
     "postprocess": {"score_threshold": 0.25, "iou_threshold": 0.55, "max_detections": 300},
     "notes": "free text (training data, licence of the weights)",
     "operating_point": {...} (optional: how score_threshold was chosen),
     "endoscopy": {...} (optional: the frame cleaning it was trained with and must run with),
     "state_dict": {...}}

A bare torchvision ``state_dict`` (or ``{"model": state_dict}`` as torchvision's reference
scripts save it) is accepted when the architecture and class names are given explicitly.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from endoedge._optional import require
from endoedge.data.hashing import file_sha256
from endoedge.errors import EndoedgeError, ModelFormatError
from endoedge.models.registry import Architecture, get_arch
from endoedge.spec import ModelSpec, read_onnx_metadata
from endoedge.spec.endoscopy import EndoscopyConfig

logger = logging.getLogger(__name__)

FORMAT = "endoedge-checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A PyTorch detector with its description.

    Attributes:
        arch: the registry entry.
        model: the full torchvision-style model, in eval mode, on the CPU.
        spec: pre-processing, decoder and default thresholds.
        path: the checkpoint file, if loaded from one.
        sha256: the checkpoint file's sha256, if loaded from one.
        notes: free text stored in the checkpoint.
        trained_input_size: ``(height, width)`` in pixels the endoedge checkpoint was saved with
            (its training size); ``None`` for a bare state_dict, whose size is unknown.
    """

    arch: Architecture
    model: Any
    spec: ModelSpec
    path: Path | None = None
    sha256: str | None = None
    notes: str = ""
    trained_input_size: tuple[int, int] | None = None

    def raw_heads(self) -> Any:
        """The exportable module (normalized batch -> raw outputs)."""
        return self.arch.raw_heads(self.model)



def parse_class_names(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a,b,c"`` or a sequence -> tuple of stripped names; ``None`` stays ``None``."""
    if text is None:
        return None
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if not names or any(not n for n in names):
        raise ModelFormatError(f"class names must be non-empty and comma-separated, got {text!r}")
    if len(set(names)) != len(names):
        raise ModelFormatError(f"class names must be unique, got {text!r}")
    return tuple(names)


def build_model(
    arch_name: str,
    class_names: Sequence[str],
    input_size: tuple[int, int] | None = None,
    *,
    state_dict: Mapping[str, Any] | None = None,
    postprocess: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Build an architecture for ``class_names`` (background implicit), optionally loading weights.

    Raises:
        UnknownNameError: unknown architecture.
        ModelFormatError: bad input size, or the state_dict does not fit the architecture.
    """
    arch = get_arch(arch_name)
    size = tuple(input_size) if input_size else arch.default_input_size
    if len(size) != 2 or min(size) < 32:
        raise ModelFormatError(f"input size must be (height, width) >= 32 px, got {size}")
    if size != arch.default_input_size and not arch.resizable:
        raise ModelFormatError(
            f"{arch.name} has a fixed input size {arch.default_input_size[0]}; drop --imgsz"
        )
    model = arch.build(len(class_names) + 1, (int(size[0]), int(size[1])))
    if state_dict is not None:
        _load_state(model, state_dict, arch.name, len(class_names))
    model.eval()
    spec = arch.make_spec(model, arch.name, tuple(class_names))
    if postprocess:
        spec = spec.with_thresholds(
            postprocess.get("score_threshold"),
            postprocess.get("iou_threshold"),
            postprocess.get("max_detections"),
        )
    return LoadedModel(arch=arch, model=model, spec=spec)


def _load_state(model: Any, state: Mapping[str, Any], arch_name: str, num_fg: int) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        size_lines = [ln for ln in lines if "size mismatch" in ln]
        hint = (
            f"size mismatch ({size_lines[0][:160]}); does --classes list the checkpoint's "
            f"{num_fg} foreground classes?"
            if size_lines
            else (lines[1] if len(lines) > 1 else lines[0])[:200]
        )
        raise ModelFormatError(
            f"weights do not fit architecture '{arch_name}': {hint}"
        ) from err


def save_checkpoint(
    path: str | Path,
    loaded: LoadedModel,
    *,
    notes: str = "",
    half: bool = False,
) -> Path:
    """Write ``loaded`` as an endoedge checkpoint; returns the path.

    ``half=True`` stores floating-point tensors as float16 (half the file size, for shipping);
    loading casts them back into the float32 model.
    """
    torch = require("torch", extra="torch", purpose="saving checkpoints")
    spec = loaded.spec
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": loaded.arch.name,
        "class_names": list(spec.class_names),
        "input_size": list(spec.preprocess.input_size),
        "mean": list(spec.preprocess.mean),
        "std": list(spec.preprocess.std),
        "postprocess": {
            "score_threshold": spec.score_threshold,
            "iou_threshold": spec.iou_threshold,
            "max_detections": spec.max_detections,
        },
        "notes": notes or loaded.notes,
        **({"operating_point": dict(spec.operating_point)} if spec.operating_point else {}),
        **({"endoscopy": dict(spec.endoscopy)} if spec.endoscopy else {}),
        "state_dict": {
            k: (v.half() if half and v.is_floating_point() else v) for k, v in loaded.model.state_dict().items()
        },
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)  # never leave a half-written checkpoint under the real name
    return out


def load_checkpoint(
    path: str | Path,
    *,
    arch: str | None = None,
    class_names: str | Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
) -> LoadedModel:
    """Load an endoedge checkpoint, or a bare state_dict given ``arch`` and ``class_names``.

    Raises:
        ModelFormatError: missing/corrupt file, pickled objects (``weights_only=True`` refuses
            them), or a bare state_dict without ``arch``/``class_names``.
    """
    torch = require("torch", extra="torch", purpose="loading PyTorch checkpoints")
    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"checkpoint '{p}' does not exist or is not a file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _looks_like_torch_file(p):
            raise ModelFormatError(
                f"checkpoint '{p}' is not a PyTorch file (neither a torch.save zip archive nor a "
                "pickle); it is corrupt or some other format"
            ) from err
        raise ModelFormatError(
            f"checkpoint '{p}' holds pickled Python objects that weights_only loading refuses "
            "(a whole model or training state?); save model.state_dict() and pass --arch/--classes"
        ) from err
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError/EOFError/zipfile errors
        raise ModelFormatError(
            f"checkpoint '{p}' cannot be read as a PyTorch file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'corrupt'})"
        ) from err
    names = parse_class_names(class_names)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        loaded = _from_endoedge(obj, p, arch, names, input_size)
    else:
        state = obj.get("model", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
            raise ModelFormatError(
                f"checkpoint '{p}' is neither an endoedge checkpoint nor a state_dict of tensors"
            )
        if arch is None or names is None:
            raise ModelFormatError(
                f"checkpoint '{p}' is a bare state_dict; say what it is with --arch NAME and "
                "--classes a,b,... (foreground classes; background is implicit)"
            )
        loaded = build_model(arch, names, input_size, state_dict=state)
    sha = file_sha256(p)
    spec = replace(loaded.spec, source_checkpoint=str(p.resolve()), source_sha256=sha)
    return replace(loaded, spec=spec, path=p, sha256=sha)


def _looks_like_torch_file(p: Path) -> bool:
    """Whether ``p`` starts like a ``torch.save`` file: a zip archive, or a legacy pickle."""
    with open(p, "rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == b"\x80"  # zip local header / pickle PROTO opcode


def _from_endoedge(
    obj: Mapping[str, Any],
    p: Path,
    arch: str | None,
    names: tuple[str, ...] | None,
    input_size: tuple[int, int] | None,
) -> LoadedModel:
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"checkpoint '{p}' has format version {version}; this endoedge reads {FORMAT_VERSION}"
        )
    if arch is not None and arch != obj["arch"]:
        raise ModelFormatError(f"checkpoint '{p}' is a {obj['arch']}, not a {arch}; drop --arch")
    if names is not None and tuple(names) != tuple(obj["class_names"]):
        logger.warning("overriding the checkpoint's class names %s with %s", obj["class_names"], names)
    size = input_size or tuple(obj["input_size"])
    loaded = build_model(
        obj["arch"],
        names or tuple(obj["class_names"]),
        size,
        state_dict=obj["state_dict"],
        postprocess=obj.get("postprocess"),
    )
    loaded.notes = str(obj.get("notes", ""))
    stored = obj.get("input_size")
    if isinstance(stored, (list, tuple)) and len(stored) == 2:
        loaded.trained_input_size = (int(stored[0]), int(stored[1]))
    point = obj.get("operating_point")
    if isinstance(point, dict):
        loaded.spec = replace(loaded.spec, operating_point=point)
    cleaning = obj.get("endoscopy")
    if cleaning is not None:
        try:
            if not isinstance(cleaning, dict):
                raise TypeError(f"a {type(cleaning).__name__}, not a dict")
            EndoscopyConfig.from_dict(cleaning)
        except (EndoedgeError, TypeError, ValueError) as err:
            raise ModelFormatError(f"checkpoint {p}: its stored endoscopy cleaning is invalid ({err}); re-save it "
                                   "with a valid config (endoedge train --endoscopy) or delete the 'endoscopy' key") from err
        loaded.spec = replace(loaded.spec, endoscopy=cleaning)
    return loaded


def load_for_torch(model_path: str | Path) -> LoadedModel:
    """Load the checkpoint behind ``model_path`` (a checkpoint, or an endoedge ONNX)."""
    model_path = Path(model_path)
    if model_path.suffix.lower() != ".onnx":
        return load_checkpoint(model_path)
    spec = ModelSpec.from_metadata(read_onnx_metadata(model_path), where=str(model_path))
    src = spec.source_checkpoint
    if not src:
        raise ModelFormatError(
            f"'{model_path}' records no source checkpoint; the torch backend needs the PyTorch "
            "weights: pass the checkpoint itself, or use --backend onnxruntime"
        )
    if not Path(src).is_file():
        raise ModelFormatError(
            f"'{model_path}' was exported from '{src}', which no longer exists; pass the "
            "checkpoint itself to the torch backend, or use --backend onnxruntime"
        )
    if spec.source_sha256 and file_sha256(src) != spec.source_sha256:
        raise ModelFormatError(
            f"'{src}' changed since '{model_path}' was exported from it (sha256 differs); "
            "re-export, or pass the checkpoint itself"
        )
    return load_checkpoint(
        src, arch=spec.arch, class_names=spec.class_names, input_size=spec.preprocess.input_size
    )
