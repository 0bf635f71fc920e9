"""Checkpoints that ship inside the endoedge package (``endoedge/models/weights/``).

``polyp_ssdlite320_effl0_kvasir_polypgen`` is the project's polyp detector (the default):
SSDLite320 on an EfficientNet-Lite0 backbone, one class ``polyp``, fine-tuned with
``endoedge train`` from ``polyp_ssdlite320_effl0_kvasir`` (twice, on frames cleaned as deployed)
on the committed Kvasir-SEG train split (880 images) plus 304 polyp-free frames of PolypGen centres
A and B (8 whole sequences; hard-negative mining, domain augmentations). Its default score
threshold, 0.2392, is the operating point chosen on two held-out PolypGen sequences for at most 2%
of polyp-free frames with a box for the first of those fine-tunes, kept for the second; the choice
and its reason are recorded in the checkpoint (``operating_point``) and in every ONNX exported
from it. Numbers in
``benchmarks/RESULTS.md``. Stored in float16 (loaded into a float32 model).

``polyp_ssdlite320_effl0_kvasir`` is the earlier detector, trained on Kvasir-SEG only (no
polyp-free frame: it shows a box on about 40% of polyp-free frames at its threshold 0.25); kept
for comparison and for tests pinned to its behaviour.

**Licence of the weights**: Kvasir-SEG (Simula Research Laboratory) allows research and
educational use only; PolypGen (Ali et al., Scientific Data 2023) is CC BY-NC-SA 4.0. Weights
trained on them carry both: non-commercial research and education only, share-alike, with
attribution. See ``weights/NOTICE.md``.

``capsule_bleeding_ssdlite320_effl0_wcebleedgen`` is the capsule bleeding detector: the same
architecture, one class ``bleeding``, trained on the WCEBleedGen train export with near-duplicate
frames grouped out of the held-out split (``data/splits/wcebleedgen``); its score threshold is
the operating threshold chosen for a stated frame sensitivity, and the ``.json`` beside it holds
that rule and the held-out metrics. **Licence**: WCEBleedGen is CC BY 4.0; the weights are a
derivative to be credited as ``weights/NOTICE.md`` says.

``polyp_multitask_ssdlite320_effl0_kvasir_polypgen`` is the multi-task SSD of the studies
(``ssdlite320_efficientnet_lite0_multitask``: RFB modules, a polyp mask fused into the shallowest
detection layer, normal / unclear / polyp frame triage), initialised from the polyp detector and
trained on Kvasir-SEG images, boxes and masks plus the same PolypGen polyp-free sequences (as
``normal`` frames) and degraded copies of both (as ``unclear``). Its score threshold is the
operating point chosen for a stated sensitivity; the ``.json`` beside it holds the rule and the
held-out numbers. Same licence as the polyp detector (Kvasir-SEG + PolypGen terms).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from endoedge.errors import ModelFormatError

#: The shipped polyp detector, the default model of ``endoedge demo``.
POLYP_DETECTOR = "polyp_ssdlite320_effl0_kvasir_polypgen"
#: The earlier detector trained on Kvasir-SEG only (no polyp-free frames).
POLYP_DETECTOR_KVASIR_ONLY = "polyp_ssdlite320_effl0_kvasir"
#: Endoscopy frame cleaning stored in the demo's ONNX: crop to the field of view, mask the OSD.
POLYP_DETECTOR_ENDOSCOPY = "all"
#: The shipped capsule bleeding detector (WCEBleedGen, CC BY 4.0).
CAPSULE_BLEEDING_DETECTOR = "capsule_bleeding_ssdlite320_effl0_wcebleedgen"
#: The multi-task SSD (boxes + polyp mask + normal / unclear / polyp triage; Kvasir-SEG + PolypGen terms).
POLYP_MULTITASK = "polyp_multitask_ssdlite320_effl0_kvasir_polypgen"
SHIPPED = (POLYP_DETECTOR, POLYP_DETECTOR_KVASIR_ONLY, CAPSULE_BLEEDING_DETECTOR, POLYP_MULTITASK)


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
