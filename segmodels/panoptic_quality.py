"""Panoptic quality (Kirillov, He, Girshick, Rother & Dollar, "Panoptic Segmentation", CVPR 2019).

A panoptic segmentation gives every pixel a class and, for *thing* classes (countable
objects), an instance id; all pixels of a *stuff* class (background here) form one segment.
Per class ``c``, a predicted segment ``p`` and a ground-truth segment ``g`` of that class
**match** when ``IoU(p, g) > 0.5``; no pixel can then belong to two matches, so the matching is
unique without any assignment step (the paper's Theorem 1). Matched pairs are true positives
(TP), unmatched predicted segments false positives (FP), unmatched ground-truth segments
false negatives (FN), and PQ and its decomposition are::

    PQ_c = sum_{(p, g) in TP} IoU(p, g) / (|TP| + |FP| / 2 + |FN| / 2)
         = [sum_{TP} IoU(p, g) / |TP|] x [|TP| / (|TP| + |FP| / 2 + |FN| / 2)]
         =              SQ_c            x               RQ_c

SQ (segmentation quality) is the mean IoU of the matches, RQ (recognition quality) the F1
score of the detection. PQ, SQ and RQ are averaged over the classes that occur (in the
ground truth or the prediction) over the whole set, so the averages are not products of each
other; PQ_Th and PQ_St average over thing and stuff classes only.

Segments are given as one integer map per image: ``class * LABEL_DIVISOR + instance id``
(instance 0 for stuff), and -1 for pixels that belong to no segment (a thing pixel left
without an instance). The paper also ignores predicted pixels over ground-truth *void* and
crowd regions; Shapes' ground truth has neither, so they are not handled here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LABEL_DIVISOR = 1000
VOID = -1
MATCH_IOU = 0.5


def panoptic_ids(semantic: np.ndarray, instances: np.ndarray, thing_classes: Sequence[int]) -> np.ndarray:
    """``class * LABEL_DIVISOR + instance id`` per pixel (int64): thing pixels keep their
    instance id, stuff pixels get id 0, and thing pixels without an instance (id 0) are VOID."""
    semantic = np.asarray(semantic).astype(np.int64)
    instances = np.asarray(instances).astype(np.int64)
    if semantic.shape != instances.shape:
        raise ValueError(f"semantic map {semantic.shape} and instance map {instances.shape} differ in shape")
    if (instances >= LABEL_DIVISOR).any() or (instances < 0).any():
        raise ValueError(f"instance ids must lie in [0, {LABEL_DIVISOR})")
    is_thing = np.isin(semantic, list(thing_classes))
    ids = semantic * LABEL_DIVISOR + np.where(is_thing, instances, 0)
    ids[is_thing & (instances == 0)] = VOID
    return ids


class PanopticQuality:
    """Accumulates TP, FP, FN and the matched IoUs per class over images (:meth:`update`) and
    reports PQ, SQ and RQ (:meth:`compute`).

    Args:
        class_names: one name per class id.
        thing_classes: the ids of the countable classes; the others are stuff.
    """

    def __init__(self, class_names: Sequence[str], thing_classes: Sequence[int]):
        self.class_names = list(class_names)
        self.thing_classes = sorted(set(thing_classes))
        if any(not 0 <= c < len(self.class_names) for c in self.thing_classes):
            raise ValueError(f"thing classes {self.thing_classes} must be class ids below {len(self.class_names)}")
        num_classes = len(self.class_names)
        self.tp = np.zeros(num_classes, dtype=np.int64)
        self.fp = np.zeros(num_classes, dtype=np.int64)
        self.fn = np.zeros(num_classes, dtype=np.int64)
        self.iou_sum = np.zeros(num_classes, dtype=np.float64)

    def update(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """Add one image: two maps of :func:`panoptic_ids`."""
        predicted, truth = np.asarray(predicted, dtype=np.int64).ravel(), np.asarray(truth, dtype=np.int64).ravel()
        if predicted.shape != truth.shape:
            raise ValueError(f"predicted and ground-truth maps differ in size: {predicted.size} and {truth.size} pixels")
        for ids, what in ((predicted, "predicted"), (truth, "ground-truth")):
            classes = ids[ids != VOID] // LABEL_DIVISOR
            if classes.size and (classes.min() < 0 or classes.max() >= len(self.class_names)):
                raise ValueError(f"{what} map holds class ids outside [0, {len(self.class_names)})")
        pred_segments, pred_areas = np.unique(predicted[predicted != VOID], return_counts=True)
        true_segments, true_areas = np.unique(truth[truth != VOID], return_counts=True)
        both = (predicted != VOID) & (truth != VOID)
        pairs, overlaps = np.unique(np.stack([predicted[both], truth[both]]), axis=1, return_counts=True)
        pred_area = dict(zip(pred_segments.tolist(), pred_areas.tolist()))
        true_area = dict(zip(true_segments.tolist(), true_areas.tolist()))
        matched_pred, matched_true = set(), set()
        for (pred_id, true_id), overlap in zip(pairs.T.tolist(), overlaps.tolist()):
            if pred_id // LABEL_DIVISOR != true_id // LABEL_DIVISOR:
                continue
            iou = overlap / (pred_area[pred_id] + true_area[true_id] - overlap)
            if iou > MATCH_IOU:
                category = true_id // LABEL_DIVISOR
                self.tp[category] += 1
                self.iou_sum[category] += iou
                matched_pred.add(pred_id)
                matched_true.add(true_id)
        for segment in pred_segments.tolist():
            if segment not in matched_pred:
                self.fp[segment // LABEL_DIVISOR] += 1
        for segment in true_segments.tolist():
            if segment not in matched_true:
                self.fn[segment // LABEL_DIVISOR] += 1

    def compute(self) -> dict:
        """``pq``, ``sq``, ``rq`` (means over the classes that occurred), ``pq_things``,
        ``pq_stuff`` and ``per_class`` {name: {pq, sq, rq, tp, fp, fn}} (None for a class that
        never occurred)."""
        per_class, rows = {}, {}
        for category, name in enumerate(self.class_names):
            tp, fp, fn = int(self.tp[category]), int(self.fp[category]), int(self.fn[category])
            if tp + fp + fn == 0:
                per_class[name] = None
                continue
            sq = float(self.iou_sum[category] / tp) if tp else 0.0
            rq = tp / (tp + 0.5 * fp + 0.5 * fn)
            rows[category] = {"pq": sq * rq, "sq": sq, "rq": rq, "tp": tp, "fp": fp, "fn": fn}
            per_class[name] = rows[category]

        def mean(key: str, categories) -> float | None:
            values = [rows[c][key] for c in categories if c in rows]
            return float(np.mean(values)) if values else None

        stuff = [c for c in range(len(self.class_names)) if c not in self.thing_classes]
        return {
            "pq": mean("pq", rows), "sq": mean("sq", rows), "rq": mean("rq", rows),
            "pq_things": mean("pq", self.thing_classes), "pq_stuff": mean("pq", stuff),
            "per_class": per_class,
        }
