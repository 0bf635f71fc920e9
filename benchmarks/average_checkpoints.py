"""Average endoedge checkpoints of one training run (stochastic weight averaging over epochs).

    python benchmarks/average_checkpoints.py runs/capsule_s6/epoch_006.pt ... runs/capsule_s6/epoch_010.pt \
        -o runs/capsule_s6/swa_6_10.pt

Every floating-point tensor of the state dicts is the plain mean over the inputs (BatchNorm running
statistics included: the frozen and slowly moving ones of a fine-tune average sensibly); integer
tensors (BatchNorm's ``num_batches_tracked``) come from the last file. The inputs must share the
architecture, classes and input size; the output keeps the last file's metadata (thresholds,
notes, frame cleaning) and says what it averages in its notes. Izmailov et al. 2018 (SWA); for
detectors Zhang et al. 2020, "SWA Object Detection".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("-o", "--output", required=True, type=Path)
    args = ap.parse_args()
    if len(args.checkpoints) < 2:
        ap.error("give at least two checkpoints to average")
    import torch

    payloads = []
    for path in args.checkpoints:
        if not path.is_file():
            ap.error(f"checkpoint '{path}' does not exist")
        payloads.append(torch.load(path, map_location="cpu", weights_only=False))
    first, last = payloads[0], payloads[-1]
    for path, p in zip(args.checkpoints, payloads, strict=True):
        for key in ("arch", "class_names", "input_size"):
            if p.get(key) != first.get(key):
                ap.error(f"'{path}' differs from '{args.checkpoints[0]}' in {key}: not one run's checkpoints")
        if p["state_dict"].keys() != first["state_dict"].keys():
            ap.error(f"'{path}' has other tensors than '{args.checkpoints[0]}'")
    state = {}
    for name, last_value in last["state_dict"].items():
        if last_value.is_floating_point():
            state[name] = torch.stack([p["state_dict"][name].float() for p in payloads]).mean(0)
        else:
            state[name] = last_value
    out = dict(last)
    out["state_dict"] = state
    names = ", ".join(c.name for c in args.checkpoints)
    out["notes"] = f"{last.get('notes', '')} | weights averaged over {len(payloads)} checkpoints ({names})".strip(" |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, args.output)
    print(f"averaged {len(payloads)} checkpoints -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
