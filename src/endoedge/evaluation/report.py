"""Presenting an evaluation report: a printed table and a PR-curve (and ROC) PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from endoedge._optional import require
from endoedge.errors import InputError
from endoedge.evaluation.multitask import format_multitask


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as plain-text tables (what ``endoedge eval`` prints)."""
    lines = []
    head = report.get("header")
    if head:
        lines.append(head)
    lines.append(f"images {report['n_images']} (+{report['n_negative_images']} negatives), "
                 f"skipped {report['n_skipped']}; classes {', '.join(report['classes'])} "
                 f"({report['class_mapping']}); operating score threshold {report['conf']:g}")
    coco = report["coco"]
    lines.append(f"COCO mAP@0.5 {_f(coco['map50'])}   mAP@0.5:0.95 {_f(coco['map50_95'])}")
    if len(coco["per_class"]) > 1:
        for name, ap in coco["per_class"].items():
            lines.append(f"  {name:<16} AP@0.5 {_f(ap['ap50'])}   AP@0.5:0.95 {_f(ap['ap50_95'])}")
    lines.append(f"Precision / recall / F1 at score >= {report['conf']:g}:")
    lines.append(f"  {'IoU':<5} {'class':<16} {'TP':>5} {'FP':>5} {'FN':>5} {'precision':>9} {'recall':>7} {'F1':>6}")
    for iou, row in report["prf"].items():
        for name, m in row.items():
            if name == "all" and len(row) == 2:
                continue  # one class: 'all' repeats it
            lines.append(f"  {iou:<5} {name:<16} {m['tp']:>5} {m['fp']:>5} {m['fn']:>5} "
                         f"{_f(m['precision']):>9} {_f(m['recall']):>7} {_f(m['f1']):>6}")
    fr = report["frame"]
    labels = fr["labels"]
    lines.append(f"Frame level (a frame is its best detection's class if one scores >= {report['conf']:g}, "
                 f"else background; negatives: {fr['negatives']}):")
    width = max(12, *(len(n) + 6 for n in labels))
    lines.append("  " + " " * 16 + "".join(f"{'pred ' + n:>{width}}" for n in labels))
    for name, row in zip(labels, fr["confusion"], strict=True):
        lines.append(f"  {'true ' + name:<16}" + "".join(f"{v:>{width}}" for v in row))
    lines.append(f"  sensitivity {_f(fr['sensitivity'])}   specificity {_f(fr['specificity'])}   "
                 f"accuracy {_f(fr['accuracy'])}")
    auc = report["auc"]
    auc_line = f"AUC of the frame score (max detection score): {_f(auc['value'])}"
    lines.append(auc_line + (f" ({auc['n_positive']} positive / {auc['n_negative']} negative frames)"
                             if auc["value"] is not None else f" - {auc.get('reason', '')}"))
    if "auc_proxy" in report:
        px = report["auc_proxy"]
        lines.append(f"AUC PROXY {_f(px['value'])} ({px['n_positive']} positive frames / "
                     f"{px['n_negative']} box-free strips): {px['definition']}")
    ov = report["overlap"]
    buckets = "   ".join(f"{k} {_f(v)}" for k, v in ov.items() if k.startswith("iou>="))
    lines.append(f"Localization, best IoU per ground-truth box ({ov['n_gt']} boxes): {buckets}   "
                 f"mean {_f(ov['mean_best_iou'])}")
    t = report["timing"]
    lines.append(f"median detect {t['median_detect_ms']:.1f} ms/image, {t['wall_s']:.1f} s in all")
    lines += format_multitask(report)
    return "\n".join(lines)


def plot_curves(report: dict[str, Any], path: str | Path) -> Path:
    """Write PR curves (per class, IoU 0.5 and 0.5:0.95) and, with negatives, the frame-level
    ROC curve to a PNG.

    Raises:
        InputError: the file cannot be written.
    """
    matplotlib = require("matplotlib", extra="eval", purpose="the PR-curve plot")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", extra="eval", purpose="the PR-curve plot")
    curves = report["pr_curves"]
    roc = report.get("roc_curve")
    fig, axes = plt.subplots(1, 2 if roc else 1, figsize=(11 if roc else 6, 5), squeeze=False)
    ax = axes[0, 0]
    recall = curves["recall"]
    for name in report["classes"]:
        for key, style, label in (("iou50", "-", "IoU 0.5"), ("iou50_95", "--", "IoU 0.5:0.95")):
            pts = [(r, p) for r, p in zip(recall, curves[name][key], strict=True) if p is not None]
            if pts:
                ax.plot([r for r, _ in pts], [p for _, p in pts], style, label=f"{name} {label}")
    coco = report["coco"]
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"PR (COCO 101-pt): mAP@0.5 {_f(coco['map50'])}, @0.5:0.95 {_f(coco['map50_95'])}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    if roc:
        ax2 = axes[0, 1]
        ax2.plot(roc["fpr"], roc["tpr"], label=f"AUC {_f(report['auc']['value'])}")
        ax2.plot([0, 1], [0, 1], ":", color="grey")
        ax2.set(xlabel="false positive rate", ylabel="true positive rate", title="frame-level ROC")
        ax2.grid(alpha=0.3)
        ax2.legend(loc="lower right")
    fig.tight_layout()
    out = Path(path)
    try:
        fig.savefig(out, dpi=110)
    except OSError as err:
        raise InputError(f"cannot write plot '{out}': {err.strerror or err}") from err
    finally:
        plt.close(fig)
    return out
