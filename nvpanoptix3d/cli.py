"""Entry point with TAO's command contract:

    nvpanoptix3d <train|evaluate|inference|export> -e SPEC.yaml [dotted.key=value ...]
    nvpanoptix3d synth OUT --scenes N --frames F --seed S [--workers K]

Exit code 0 only on success; a bad spec gets one line naming the key and the fix (exit 2).
"""
from __future__ import annotations

import argparse
import errno
import signal
import sys
import traceback
from pathlib import Path

import yaml
from tao_skill_bank import safe_yaml

from .config import ACTIONS, ExperimentConfig, SpecError, from_dict, leaf_type, to_dict, validate_semantics
from .fileio import write_bytes


def apply_overrides(spec: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"override {item!r}: write it as dotted.key=value")
        key, raw = item.split("=", 1)
        kind = leaf_type(key)
        if len(raw) > safe_yaml.MAX_VALUE_BYTES:
            raise SpecError(f"{key}: a value of {len(raw)} bytes, over the {safe_yaml.MAX_VALUE_BYTES}-byte limit "
                            "for one override; put large values in the spec file")
        try:
            value = raw if kind is str else safe_yaml.load(raw, safe_yaml.MAX_VALUE_BYTES)
        except (yaml.YAMLError, safe_yaml.BoundError) as exc:
            raise SpecError(f"{key}: not a valid value ({_first_line(exc)})") from None
        node = spec
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(f"{key}: {part} is not a section in the spec file")
        node[parts[-1]] = value
    return spec


def load_config(spec_path: str, overrides: list[str]) -> ExperimentConfig:
    path = Path(spec_path)
    if not path.is_file():
        raise SpecError(f"-e {spec_path}: spec file not found")
    if path.stat().st_size > safe_yaml.MAX_SPEC_BYTES:
        raise SpecError(f"-e {spec_path}: {path.stat().st_size} bytes, over the {safe_yaml.MAX_SPEC_BYTES}-byte "
                        "limit for a spec file")
    try:
        spec = safe_yaml.load(path.read_text(errors="replace")) or {}
    except safe_yaml.BoundError as exc:
        raise SpecError(f"-e {spec_path}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"-e {spec_path}: not valid YAML ({_first_line(exc)})") from None
    cfg = from_dict(ExperimentConfig, apply_overrides(spec, overrides))
    validate_semantics(cfg)
    if not cfg.results_dir:
        raise SpecError("results_dir: empty; pass results_dir=/path/to/results")
    return cfg


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def run_action(action: str, cfg: ExperimentConfig) -> dict:
    from .engine import evaluate, export, inference, train
    runners = {"train": train.run_train, "evaluate": evaluate.run_evaluate, "inference": inference.run_inference,
               "export": export.run_export}
    return runners[action](cfg)


def synth_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="nvpanoptix3d synth", description="Write synthetic scenes in the "
                                "NVPanoptix3D / 3D-FRONT layout")
    p.add_argument("out")
    p.add_argument("--scenes", type=int, default=10)
    p.add_argument("--frames", type=int, default=2, help="views per scene")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-scenes", type=int)
    p.add_argument("--test-scenes", type=int)
    p.add_argument("--layout", default="front3d", choices=["front3d", "matterport", "multiview"],
                   help="front3d / matterport: single views with 3D ground truth in that data set's naming; "
                        "multiview: nerfstudio walk-throughs")
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args(argv)
    try:
        return _synth(a)
    except (ValueError, OSError) as exc:
        print(f"error: nvpanoptix3d synth: {exc}", file=sys.stderr)
        return 2


def _synth(a) -> int:
    from .synth import write_dataset
    if a.layout == "multiview":
        from .synth.multiview import write_multiview
        out = write_multiview(a.out, a.scenes, a.frames, a.seed)
    else:
        out = write_dataset(a.out, a.scenes, a.frames, a.seed, a.val_scenes, a.test_scenes, a.workers,
                            layout=a.layout)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "synth":
        return synth_main(argv[1:])
    if argv and argv[0] == "view":
        from .viewer.serve import main as view_main
        return view_main(argv[1:])
    p = argparse.ArgumentParser(prog="nvpanoptix3d", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("-e", "--experiment_spec", required=True, help="spec YAML")
    p.add_argument("overrides", nargs="*", help="dotted.key=value")
    args = p.parse_intermixed_args(argv)
    from .engine import interrupt
    interrupt.install()
    status = lock = None
    try:
        cfg = load_config(args.experiment_spec, args.overrides)
        results = Path(cfg.results_dir)
        results.mkdir(parents=True, exist_ok=True)
        from .engine.joblock import JobLock, is_first_process
        # before anything is written: a second engine must not touch the job
        lock = JobLock(results).acquire() if is_first_process() else None
        write_bytes(results / "experiment.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False).encode())
        from .engine.status import StatusWriter
        status = StatusWriter(results)
        if lock and lock.took_over:
            status.write("lock", took_over=lock.took_over)
        run_action(args.action, cfg)
        return 0
    except SpecError as exc:
        return _fail(status, args.action, f"error: {_one_line(exc)}", 2)
    except (interrupt.JobInterrupted, KeyboardInterrupt, SystemExit) as exc:
        signum = interrupt.received() or signal.SIGTERM
        if isinstance(exc, SystemExit) and not interrupt.received() and exc.code not in (None, 0):
            return _fail(status, args.action, f"error: exited with code {exc.code}", 1)
        name = signal.Signals(signum).name
        event = "requeued" if signum == signal.SIGUSR1 else "cancelled"
        print(f"{event}: {name} received; the job stops here", file=sys.stderr)
        _write(status, event, action=args.action, signal=name)
        return 128 + signum
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return _fail(status, args.action, f"error: {exc.strerror or exc}", 1)
        traceback.print_exc()
        return _fail(status, args.action, f"error: {type(exc).__name__}: {exc}", 1)
    except Exception as exc:  # noqa: BLE001 - the job must end with a failure record and non-zero exit
        traceback.print_exc()
        return _fail(status, args.action, f"error: {type(exc).__name__}: {_one_line(exc)}", 1)
    finally:
        if lock:
            lock.release()


def _one_line(exc: BaseException) -> str:
    """An error's own message; one raised in a data-loader worker arrives wrapped in the worker's traceback,
    whose last line is the original."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(exc).__name__


def _write(status, event: str, **fields) -> None:
    if status is None:
        return
    try:
        status.write(event, **fields)
    except OSError:  # a full disk: the exit code and the log line still tell
        pass


def _fail(status, action: str, line: str, code: int) -> int:
    print(line, file=sys.stderr)
    _write(status, "failed", action=action, error=line.removeprefix("error: "))
    return code

if __name__ == "__main__":
    sys.exit(main())
