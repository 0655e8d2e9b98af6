"""Segmentation metrics exactly as the IVS benchmarks define them.

Image (RefCOCO/+/g, ReasonSeg): `ciou_giou`. Video (MeViS, Ref-YouTube-VOS, Ref-DAVIS, ReVOS):
`j_and_f`, plus ReVOS's `revos_accuracy_robustness`. A ``None`` prediction (no ``[SEG]``) counts
as an empty mask everywhere. See docs/evaluation.md for the conventions.
"""
from evtp.metrics.aggregate import (image_sample_metrics, mean_of_families, paired_bootstrap,
                                    summarize_by_family, summarize_metrics, video_sample_metrics)
from evtp.metrics.image import ciou_giou, ciou_giou_from_counts, intersection_union, sample_iou
from evtp.metrics.video import (boundary_f, boundary_map, boundary_radius, disk, j_and_f,
                                region_similarity, revos_accuracy_robustness)

__all__ = [
    "ciou_giou", "ciou_giou_from_counts", "intersection_union", "sample_iou",
    "j_and_f", "region_similarity", "boundary_f", "boundary_map", "boundary_radius", "disk",
    "revos_accuracy_robustness",
    "image_sample_metrics", "video_sample_metrics", "summarize_metrics", "summarize_by_family",
    "mean_of_families", "paired_bootstrap",
]
