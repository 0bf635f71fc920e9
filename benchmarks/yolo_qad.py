"""Label-free quantization-aware fine-tuning (distillation) of an Ultralytics YOLO peer (issue 14).

Is the YOLO peers' INT8 miss something a QAT-style fine-tune removes? The student is the peer with
BN folded and INT8 fake quantization on every Conv the default recipe quantizes (symmetric; weights
per output channel, inputs per tensor at the 99.99th percentile of |x| on calibration images) and on
the residual Add inputs; the recipe's float output layers (class convs, DFL conv) stay float. The
teacher is the same FP32 peer; the loss is the MSE of the raw head outputs (box distribution logits +
``--cls-weight`` x class logits), so no labels are needed. Images: the folder(s) given (the peer's own
training images), letterboxed to the export size, random flips. The result is saved as an
Ultralytics checkpoint and exported to ONNX the way ``train_yolo_peer.py`` does; then the README's
default ``endoedge quantize`` command is meant to run on that ONNX unchanged.

Ultralytics is AGPL-3.0: endoedge never imports it; this is a benchmark helper for a test-time peer.

    python benchmarks/yolo_qad.py --weights runs/yolo_peer/yolov8n_e32_neg/weights/best.pt \\
        --images runs/yolo_peer/data_neg/images/train --out runs/s14/yolov8n_neg_qad.pt
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """BGR uint8 -> RGB float32 CHW in 0..1, longest side ``size``, padded with 114 (Ultralytics')."""
    import cv2

    h, w = image.shape[:2]
    r = size / max(h, w)
    nh, nw = round(h * r), round(w * r)
    out = np.full((size, size, 3), 114, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[..., ::-1].transpose(2, 0, 1)).astype(np.float32) / 255


def fake_quant_model(model, images, float_convs: set[str], percentile: float) -> list:
    """Patch ``model`` in place: INT8 fake quantization on Conv inputs/weights and residual Add
    inputs; return the patched modules (to undo with :func:`unpatch`)."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from ultralytics.nn.modules.block import Bottleneck

    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and n not in float_convs}
    adds = [m for m in model.modules() if isinstance(m, Bottleneck) and m.add]
    amax: dict[int, float] = {}

    def record(key: int, x: torch.Tensor) -> None:
        v = float(torch.quantile(x.detach().abs().flatten()[::7].float(), percentile))
        amax[key] = max(amax.get(key, 0.0), v)

    hooks = [m.register_forward_pre_hook(lambda m, a: record(id(m), a[0])) for m in convs.values()]
    hooks += [m.register_forward_pre_hook(lambda m, a: record(id(m), a[0])) for m in adds]
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), 8):
            model(torch.from_numpy(np.stack(images[i:i + 8])))
    for h in hooks:
        h.remove()

    def fq(x: torch.Tensor, a: float) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, max(a, 1e-8) / 127, 0, -128, 127)

    for m in convs.values():
        a = amax[id(m)]

        def forward(x, m=m, a=a):
            w = m.weight
            s = (w.detach().abs().amax(dim=(1, 2, 3)) / 127).clamp_min(1e-8)
            wq = torch.fake_quantize_per_channel_affine(w, s, torch.zeros_like(s, dtype=torch.int32), 0, -128, 127)
            return F.conv2d(fq(x, a), wq, m.bias, m.stride, m.padding, m.dilation, m.groups)

        m.forward = forward
    for m in adds:
        a = amax[id(m)]

        def forward_add(x, m=m, a=a):
            xq = fq(x, a)
            y = m.cv2(m.cv1(xq))
            return xq + y

        m.forward = forward_add
    return [*convs.values(), *adds]


def unpatch(modules: list) -> None:
    """Drop the instance-level forwards :func:`fake_quant_model` set."""
    for m in modules:
        if "forward" in m.__dict__:
            del m.__dict__["forward"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True, help="the peer's Ultralytics best.pt")
    ap.add_argument("--images", type=Path, action="append", required=True, help="training image folder(s)")
    ap.add_argument("--out", type=Path, required=True, help="fine-tuned checkpoint (.pt); the ONNX goes beside it")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--cls-weight", type=float, default=4.0)
    ap.add_argument("--percentile", type=float, default=0.9999)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.weights.is_file():
        ap.error(f"--weights {args.weights} is not a file")
    missing = [str(d) for d in args.images if not d.is_dir()]
    if missing:
        ap.error(f"--images {', '.join(missing)}: not a folder (e.g. runs/yolo_peer/data_neg/images/train)")
    import cv2
    import torch

    os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / "runs" / "yolo_peer" / "ultralytics_cfg"))
    from ultralytics import YOLO

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    paths = sorted(p for d in args.images for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        ap.error("--images: no images found")
    t0 = time.perf_counter()
    images = [letterbox(cv2.imread(str(p)), args.imgsz) for p in paths]
    print(f"{len(images)} images letterboxed to {args.imgsz} in {time.perf_counter() - t0:.0f} s", flush=True)

    teacher = YOLO(str(args.weights)).model.float()
    teacher.fuse()
    student = copy.deepcopy(teacher)
    head = [n for n, m in student.named_modules() if n.startswith("model.") and hasattr(m, "cv3") and hasattr(m, "dfl")]
    if len(head) != 1:
        raise SystemExit("error: expected one Ultralytics Detect head (cv2/cv3/dfl)")
    h = head[0]
    n_scales = len(student.get_submodule(h).cv3)
    float_convs = {f"{h}.cv3.{i}.2" for i in range(n_scales)} | {f"{h}.dfl.conv"}
    calib = [images[i] for i in rng.choice(len(images), min(args.calib_images, len(images)), replace=False)]
    patched = fake_quant_model(student, calib, float_convs, args.percentile)
    print(f"fake-quantized {len(patched)} modules (float: {sorted(float_convs)})", flush=True)

    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.train()  # raw head outputs; BN is folded, so train and eval compute the same
    student.train()
    for n, p in student.named_parameters():  # Ultralytics loads frozen; the DFL conv is a fixed expectation
        p.requires_grad_(".dfl." not in n)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    x_all = np.stack(images)
    steps = 0
    for epoch in range(args.epochs):
        order = rng.permutation(len(images))
        total, t0 = 0.0, time.perf_counter()
        for i in range(0, len(order), args.batch):
            x = x_all[order[i:i + args.batch]].copy()
            if rng.random() < 0.5:
                x = x[..., ::-1].copy()
            if rng.random() < 0.5:
                x = x[..., ::-1, :].copy()
            xt = torch.from_numpy(x)
            with torch.no_grad():
                ref = teacher(xt)
            got = student(xt)
            loss = torch.nn.functional.mse_loss(got["boxes"], ref["boxes"]) + \
                args.cls_weight * torch.nn.functional.mse_loss(got["scores"], ref["scores"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            if steps == 0:
                print(f"first batch: distillation loss {loss.item():.5f}", flush=True)
            steps += 1
        print(f"epoch {epoch + 1}/{args.epochs}: distillation loss {total / len(order):.5f} "
              f"({time.perf_counter() - t0:.0f} s, {steps} steps)", flush=True)

    unpatch(patched)
    student.eval()
    ckpt = torch.load(str(args.weights), map_location="cpu", weights_only=False)
    ckpt["model"] = student.half()
    ckpt["ema"] = None
    ckpt["optimizer"] = None
    ckpt["train_args"] = {**(ckpt.get("train_args") or {}), "qad": vars(args) | {k: str(v) for k, v in vars(args).items()
                                                                                   if isinstance(v, (Path, list))}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, str(args.out))
    onnx = YOLO(str(args.out)).export(format="onnx", opset=17, dynamic=True, imgsz=args.imgsz, simplify=False)
    print(f"fine-tuned: {args.out}\nonnx: {onnx}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
