"""2D stage: PQ and depth AbsRel on held-out synthetic frames, and inference time per frame.

    python bench/engine_2d.py [--checkpoint PATH] [--frames N]

Targets (issue 4): PQ >= 0.60, depth AbsRel <= 0.08 after GPU training.
"""
from engine_common import evaluate, parse

if __name__ == "__main__":
    args = parse()
    metrics, seconds = evaluate(args)
    pq, absrel = metrics.get("pq", 0.0), metrics.get("depth_abs_rel", float("nan"))
    print(f"frames={args.frames} pq={pq:.3f} target=0.60 ratio={pq / 0.60:.2f} "
          f"depth_abs_rel={absrel:.3f} target=0.08 ratio={0.08 / absrel:.2f} "
          f"depth_abs_rel_scaled={metrics.get('depth_abs_rel_scaled', 0):.3f} "
          f"depth_in_tolerance={metrics.get('depth_in_tolerance', 0):.3f} "
          f"depth_delta1={metrics.get('depth_delta1', 0):.3f} "
          f"pq_things={metrics.get('pq_things', 0):.3f} pq_stuff={metrics.get('pq_stuff', 0):.3f} "
          f"inference_s_per_frame={seconds:.3f} (whole model, this machine)")
