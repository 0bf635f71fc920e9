"""The job summary (``--report summary.json``): counts over the whole results file, the flagged
frames, per-stage time of this run, throughput and the projected time of a 50,000-image study."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from endoedge.batch.models import StageTotals
from endoedge.batch.results import record_key

STUDY_IMAGES = 50_000


@dataclass
class Summary:
    """Counts every record of the results file (old ones on resume and new ones)."""

    images: int = 0
    ok: int = 0
    errors: int = 0
    flagged: list[str] = field(default_factory=list)
    error_list: list[dict[str, str]] = field(default_factory=list)

    def add(self, rec: Mapping[str, Any]) -> None:
        """Count one record."""
        self.images += 1
        if "error" in rec:
            self.errors += 1
            self.error_list.append({"path": record_key(rec), "error": str(rec["error"])})
            return
        self.ok += 1
        if rec.get("flagged"):
            self.flagged.append(record_key(rec))

    def report(self, *, processed: int, resumed: int, wall_s: float, times: StageTotals,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The summary dict.

        Args:
            processed: inputs handled by this run (not counting those resumed from the file).
            resumed: records already in the file when this run started.
            wall_s: wall-clock seconds of this run's processing (models loaded, first input
                submitted -> last record written).
            times: summed per-stage milliseconds of this run.
        """
        ips = processed / wall_s if wall_s > 0 and processed else None
        per_image = {k: round(v / processed, 3) for k, v in times.as_dict().items()} if processed else {}
        return {
            "counts": {"images": self.images, "ok": self.ok, "errors": self.errors, "flagged": len(self.flagged)},
            "flagged": sorted(self.flagged),
            "errors": self.error_list,
            "run": {
                "processed": processed,
                "resumed": resumed,
                "wall_s": round(wall_s, 3),
                "images_per_s": round(ips, 2) if ips else None,
                "minutes_per_50k": round(STUDY_IMAGES / ips / 60.0, 1) if ips else None,
                "stage_ms_total": times.as_dict(),
                "stage_ms_per_image": per_image,
                "note": "decode and preprocess run in the workers (summed over them, overlapping "
                        "inference); infer/postprocess/write on the inference thread",
            },
            **(dict(extra) if extra else {}),
        }
