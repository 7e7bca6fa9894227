"""3D stage: PRQ, occupancy IoU and semantic mIoU on held-out synthetic frames, and inference time per frame.

    python bench/engine_3d.py [--checkpoint PATH] [--frames N] [--depth predicted|ground_truth] [--depth-error F]
        [--true-depth-on wall,floor] [--true-scale] [--per-class] [--set postprocess.layout_planes=off]

Target (issue 5): PRQ >= 0.45 with the shipped weights. `--depth ground_truth` lifts with the true depth: the
gap between the two runs is what the depth head costs, the rest is the 3D stage's own.
"""
from engine_common import evaluate, parse

if __name__ == "__main__":
    args = parse()
    metrics, seconds = evaluate(args)
    prq = metrics.get("prq", 0.0)
    depth = args.depth if args.depth_error is None else f"true+{args.depth_error}x_error"
    depth += "_true_scale" if args.true_scale else ""
    print(f"frames={args.frames} depth={depth} prq={prq:.3f} target=0.45 ratio={prq / 0.45:.2f} "
          f"rsq={metrics.get('rsq', 0):.3f} rrq={metrics.get('rrq', 0):.3f} "
          f"occupancy_iou={metrics.get('occupancy_iou', 0):.3f} semantic_miou={metrics.get('semantic_miou', 0):.3f} "
          f"inference_s_per_frame={seconds:.3f}")
    if args.per_class:
        for name, score in metrics.get("prq_per_class", {}).items():
            print(f"  {name:16s} prq={score['quality']:.3f} rsq={score['segmentation']:.3f} "
                  f"rrq={score['recognition']:.3f} tp={score['tp']} fp={score['fp']} fn={score['fn']}")
