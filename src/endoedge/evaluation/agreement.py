"""Box agreement of a candidate detector with a reference at one operating score threshold.

Both models' detections of the same frames (boxes xyxy in the same pixel coordinates, class
indices in the same space, scores in 0..1, typically from one pass at a low threshold such as
COCO's 0.001) are compared at the reference's operating threshold ``t``:

- **box agreement**: the share of the reference's boxes scoring >= ``t`` that the candidate
  keeps, i.e. that are matched to a candidate box scoring >= ``t`` of the same class with IoU
  >= ``iou`` (0.5). Matching is one-to-one and greedy by IoU (:func:`match_boxes`).
- **extra share**: the share of the candidate's boxes >= ``t`` that match no reference box.
- **frame agreement**: the share of frames where both models raise an alarm (a box >= ``t``)
  or both stay silent.
- **score shift**: the mean candidate-minus-reference score of the reference's boxes >= ``t``,
  each matched (same rule) among *all* the candidate's boxes down to the pass threshold, so
  boxes whose score fell below ``t`` still count: a systematic shift shows here first.

Example::

    from endoedge.evaluation.agreement import AgreementCounter

    counter = AgreementCounter(threshold=0.5)
    for ref_pred, cand_pred in zip(ref_predictions, cand_predictions):
        counter.add(ref_pred, cand_pred)
    print(counter.result().box_agreement)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from endoedge.evaluation.metrics import Prediction, box_iou

MATCH_IOU = 0.5  # IoU at which a candidate box "keeps" a reference box


def match_boxes(
    ref_boxes: np.ndarray,
    ref_labels: np.ndarray,
    cand_boxes: np.ndarray,
    cand_labels: np.ndarray,
    iou_threshold: float = MATCH_IOU,
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one greedy matching of two box sets of one frame, by IoU.

    The pair of highest IoU among unmatched boxes of the same class is matched first, then the
    next, while IoU >= ``iou_threshold`` (the order COCO-style greedy matching gives when pairs
    are taken by IoU). Vectorised: each round matches every pair that is the best of both its
    row and its column (the globally best pair always is, so each round matches at least one);
    ties go to the lower index.

    Args:
        ref_boxes, cand_boxes: ``N x 4`` / ``M x 4`` xyxy in the same pixel coordinates.
        ref_labels, cand_labels: ``N`` / ``M`` integer class indices.
        iou_threshold: smallest IoU of a match.

    Returns:
        ``(ref_index, cand_index)``: int64 arrays of the matched pairs, in matching order.
    """
    empty = np.zeros(0, np.int64)
    if len(ref_boxes) == 0 or len(cand_boxes) == 0:
        return empty, empty
    iou = box_iou(np.asarray(ref_boxes, np.float64), np.asarray(cand_boxes, np.float64))
    valid = (np.asarray(ref_labels)[:, None] == np.asarray(cand_labels)[None, :]) & (iou >= iou_threshold)
    rows, cols = np.nonzero(valid.any(axis=1))[0], np.nonzero(valid.any(axis=0))[0]
    if rows.size == 0:
        return empty, empty
    # Work on the rows/columns that can match at all; -1 marks "no pair".
    m = np.where(valid[np.ix_(rows, cols)], iou[np.ix_(rows, cols)], -1.0)
    out_r: list[np.ndarray] = []
    out_c: list[np.ndarray] = []
    idx = np.arange(len(rows))
    while True:
        best_c = m.argmax(axis=1)
        best_r = m.argmax(axis=0)
        mutual = (m[idx, best_c] >= 0) & (best_r[best_c] == idx)
        if not mutual.any():
            break
        r = idx[mutual]
        c = best_c[r]
        out_r.append(r)
        out_c.append(c)
        m[r, :] = -1.0
        m[:, c] = -1.0
    r_all, c_all = np.concatenate(out_r), np.concatenate(out_c)
    return rows[r_all].astype(np.int64), cols[c_all].astype(np.int64)


@dataclass(frozen=True)
class Agreement:
    """A candidate's agreement with its reference at one operating point (module docstring).

    Attributes:
        threshold: the operating score threshold (the reference's).
        iou_threshold: IoU of a match.
        n_frames: frames compared.
        reference_boxes, candidate_boxes: boxes scoring >= ``threshold``, summed over frames.
        kept: reference boxes the candidate keeps (matched at the operating point).
        box_agreement: ``kept / reference_boxes`` (``None`` without reference boxes).
        extra_share: candidate boxes matching no reference box / ``candidate_boxes``
            (``None`` without candidate boxes).
        frames_both, frames_neither, frames_reference_only, frames_candidate_only: frames with an
            alarm (a box >= ``threshold``) in both, neither, only the reference, only the candidate.
        frame_agreement: ``(frames_both + frames_neither) / n_frames`` (``None`` without frames).
        shift_pairs: reference boxes matched among all the candidate's boxes (for the shift).
        mean_score_shift: mean candidate minus reference score over those pairs (``None``
            without pairs); negative = the candidate scores lower.
    """

    threshold: float
    iou_threshold: float
    n_frames: int
    reference_boxes: int
    candidate_boxes: int
    kept: int
    box_agreement: float | None
    extra_share: float | None
    frames_both: int
    frames_neither: int
    frames_reference_only: int
    frames_candidate_only: int
    frame_agreement: float | None
    shift_pairs: int
    mean_score_shift: float | None

    @property
    def extra(self) -> int:
        """Candidate boxes >= the threshold that match no reference box."""
        return self.candidate_boxes - self.kept

    @property
    def added_share(self) -> float:
        """:attr:`extra_share`, 0 where the candidate has no box at all (it added none)."""
        return self.extra_share or 0.0

    @property
    def cost(self) -> float:
        """One number to minimise (the float-fallback ranking): ``(1 - box_agreement) +
        extra_share + |mean_score_shift|``, each term 0 where undefined."""
        return ((0.0 if self.box_agreement is None else 1.0 - self.box_agreement)
                + (self.extra_share or 0.0) + abs(self.mean_score_shift or 0.0))

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready, the attributes in order (ratios rounded to 1e-6)."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class AgreementCounter:
    """Accumulates :class:`Agreement` frame by frame (see the module docstring).

    Args:
        threshold: the operating score threshold.
        iou_threshold: IoU of a match.
    """

    def __init__(self, threshold: float, iou_threshold: float = MATCH_IOU) -> None:
        self.threshold = float(threshold)
        self.iou_threshold = float(iou_threshold)
        self._n = np.zeros(4, np.int64)  # frames: both, neither, reference only, candidate only
        self._boxes = np.zeros(3, np.int64)  # reference, candidate, kept
        self._shift_sum = 0.0
        self._shift_n = 0

    def add(self, reference: Prediction, candidate: Prediction) -> None:
        """One frame's detections of both models (any score; filtered at the threshold here)."""
        t = self.threshold
        r = reference.scores >= t
        c = candidate.scores >= t
        rb, rl, rs = reference.boxes[r], reference.labels[r], reference.scores[r]
        kept, _ = match_boxes(rb, rl, candidate.boxes[c], candidate.labels[c], self.iou_threshold)
        self._boxes += (len(rb), int(c.sum()), len(kept))
        ref_alarm, cand_alarm = len(rb) > 0, bool(c.any())
        self._n[0 if ref_alarm and cand_alarm else 1 if not (ref_alarm or cand_alarm)
                else 2 if ref_alarm else 3] += 1
        ri, ci = match_boxes(rb, rl, candidate.boxes, candidate.labels, self.iou_threshold)
        if len(ri):
            self._shift_sum += float((candidate.scores[ci].astype(np.float64) - rs[ri]).sum())
            self._shift_n += len(ri)

    def result(self) -> Agreement:
        """The agreement over every frame added so far."""
        both, neither, ref_only, cand_only = (int(x) for x in self._n)
        n_ref, n_cand, kept = (int(x) for x in self._boxes)
        n = both + neither + ref_only + cand_only
        return Agreement(
            threshold=self.threshold, iou_threshold=self.iou_threshold, n_frames=n,
            reference_boxes=n_ref, candidate_boxes=n_cand, kept=kept,
            box_agreement=kept / n_ref if n_ref else None,
            extra_share=(n_cand - kept) / n_cand if n_cand else None,
            frames_both=both, frames_neither=neither, frames_reference_only=ref_only,
            frames_candidate_only=cand_only, frame_agreement=(both + neither) / n if n else None,
            shift_pairs=self._shift_n,
            mean_score_shift=self._shift_sum / self._shift_n if self._shift_n else None,
        )


def agreement(
    reference: list[Prediction] | tuple[Prediction, ...],
    candidate: list[Prediction] | tuple[Prediction, ...],
    threshold: float,
    iou_threshold: float = MATCH_IOU,
) -> Agreement:
    """:class:`Agreement` of two models' per-frame detections of the same frames (same order)."""
    counter = AgreementCounter(threshold, iou_threshold)
    for r, c in zip(reference, candidate, strict=True):
        counter.add(r, c)
    return counter.result()

