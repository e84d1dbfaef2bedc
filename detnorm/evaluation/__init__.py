"""COCO evaluation, as training, ``detnorm-eval`` and the analysis tools run it.

* :mod:`~detnorm.evaluation.results`: model outputs -> COCO results (:func:`predictions_to_coco`),
  gathered across DDP ranks (:func:`gather_predictions`), written (:func:`save_results`), read
  and checked (:func:`load_results`, :func:`check_results`);
* :mod:`~detnorm.evaluation.coco_eval`: results + ground truth -> COCOeval -> metrics x100
  (:func:`evaluate_coco`, equal to pycocotools; :func:`load_gt_dataset`, the backends);
* :mod:`~detnorm.evaluation.stats`: the 12 summary stats at any detections-per-image limit;
* :mod:`~detnorm.evaluation.tables`: Markdown tables of the metrics.

The public names of ``results`` and ``coco_eval`` are importable from here.
"""

from detnorm.evaluation.coco_eval import (
    BACKENDS,
    DEFAULT_BACKEND,
    STAT_NAMES,
    evaluate_coco,
    load_gt_dataset,
    resolve_backend,
)
from detnorm.evaluation.results import (
    IOU_TYPES,
    MASK_THRESHOLD,
    check_iou_types,
    check_results,
    gather_predictions,
    load_results,
    predictions_to_coco,
    save_results,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "IOU_TYPES",
    "MASK_THRESHOLD",
    "STAT_NAMES",
    "check_iou_types",
    "check_results",
    "evaluate_coco",
    "gather_predictions",
    "load_gt_dataset",
    "load_results",
    "predictions_to_coco",
    "resolve_backend",
    "save_results",
]
