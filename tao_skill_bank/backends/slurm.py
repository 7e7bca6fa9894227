"""The engine as a Slurm batch job: sbatch script, state, logs, cancel, preemption and requeue.

The script asks for one task per GPU on each node (`--ntasks-per-node` = `--gres=gpu:N`), which is what
Lightning's SLURM environment checks, and starts the tasks with `srun`, so each task is one training process
whose rank Slurm sets. `--signal=USR1@90` warns the job 90 s before its time limit and `--requeue` lets a
preempted or warned job run again: the engine saves a checkpoint and asks for the requeue, and the restarted job
resumes from it (SLURM_RESTART_COUNT). The job folder and the data live on storage every node mounts.

Containers: Pyxis (`srun --container-image`), Apptainer (`apptainer exec --nv`), or none (the engine's Python
on shared storage, which is what the runner's command already names).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import BinaryIO

from ..errors import SkillBankError

# Slurm job states -> what the supervisor does with them
RUNNING_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                  "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
CANCELLED_STATES = {"CANCELLED", "PREEMPTED", "DEADLINE", "REVOKED"}
JOB_ID_FILE = "slurm_job_id"


class SlurmBackend:
    def __init__(self, partition: str | None = None, account: str | None = None, nodes: int = 1,
                 gpus_per_node: int = 0, cpus_per_task: int = 2, mem_per_cpu: str | None = None,
                 time_limit: str = "24:00:00", container: str | None = None, container_runtime: str = "pyxis",
                 mounts: list[str] | None = None, requeue: bool = True, warn_seconds: int = 90,
                 extra: list[str] | None = None, poll_s: float = 2.0, input_paths: list[str] | None = None):
        if container_runtime not in ("pyxis", "apptainer"):
            raise SkillBankError(f"slurm container_runtime {container_runtime!r}: use pyxis or apptainer")
        self.partition, self.account, self.nodes = partition, account, int(nodes)
        self.gpus_per_node, self.cpus_per_task, self.mem_per_cpu = int(gpus_per_node), int(cpus_per_task), mem_per_cpu
        self.time_limit, self.container, self.container_runtime = time_limit, container, container_runtime
        self.mounts, self.requeue, self.warn_seconds = list(mounts or []), requeue, int(warn_seconds)
        self.extra, self.poll_s = list(extra or []), float(poll_s)
        self.input_paths = list(input_paths or [])

    def check(self) -> None:
        missing = [c for c in ("sbatch", "sinfo", "scontrol", "scancel") if shutil.which(c) is None]
        if missing:
            raise SkillBankError(f"slurm backend: {', '.join(missing)} not found on PATH; run the runner on a "
                                 "Slurm login node or use --backend local / docker")
        partitions = _sinfo("%P|%D|%G")
        if partitions is None:
            return  # the controller did not answer: sbatch will say why
        default = next((p.rstrip("*") for p, _, _ in partitions if p.endswith("*")), None)
        name = self.partition or default
        rows = [(int(nodes), _gpus(gres)) for p, nodes, gres in partitions if p.rstrip("*") == name]
        if not rows:
            known = ", ".join(sorted({p.rstrip("*") for p, _, _ in partitions}))
            raise SkillBankError(f"slurm backend: partition {name!r} does not exist; pass --partition with one of "
                                 f"{known}")
        nodes, most = sum(n for n, _ in rows), max(g for _, g in rows)
        if self.nodes > nodes:
            raise SkillBankError(f"slurm backend: {self.nodes} nodes asked; partition {name} has {nodes}; pass "
                                 f"--nodes {nodes} or fewer (train.num_nodes)")
        if self.gpus_per_node > most:
            raise SkillBankError(f"slurm backend: {self.gpus_per_node} GPUs per node asked; partition {name}'s nodes "
                                 f"have at most {most} (sinfo -p {name} -o %G); pass --gpus-per-node {most} or fewer "
                                 "(train.num_gpus)")

    # ------------------------------------------------------------------ the script
    def script(self, record, store) -> str:
        job_dir = store.job_dir(record.job_id).resolve()
        tasks = max(1, self.gpus_per_node)
        lines = ["#!/bin/bash", f"#SBATCH --job-name=tao-{record.job_id}"[:80],
                 f"#SBATCH --chdir={job_dir}", f"#SBATCH --output={job_dir / 'slurm-%j.out'}",
                 f"#SBATCH --nodes={self.nodes}", f"#SBATCH --ntasks-per-node={tasks}",
                 f"#SBATCH --cpus-per-task={self.cpus_per_task}", f"#SBATCH --time={self.time_limit}"]
        if self.gpus_per_node:
            lines.append(f"#SBATCH --gres=gpu:{self.gpus_per_node}")
        if self.mem_per_cpu:
            lines.append(f"#SBATCH --mem-per-cpu={self.mem_per_cpu}")
        if self.partition:
            lines.append(f"#SBATCH --partition={self.partition}")
        if self.account:
            lines.append(f"#SBATCH --account={self.account}")
        if self.requeue:
            lines += ["#SBATCH --requeue", f"#SBATCH --signal=USR1@{self.warn_seconds}"]
        lines += [f"#SBATCH {option}" for option in self.extra]
        lines += ["set -euo pipefail", "export TAO_SKILL_BANK_BACKEND=slurm",
                  "echo \"[slurm] job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST\"",
                  "exec srun --kill-on-bad-exit=1 " + self._launch(record.command, job_dir)]
        return "\n".join(lines) + "\n"

    def _launch(self, command: list[str], job_dir: Path) -> str:
        words = " ".join(shlex.quote(c) for c in command)
        binds = [f"{job_dir}:{job_dir}"] + [f"{p}:{p}:ro" for p in self.input_paths if os.path.isabs(p)] + self.mounts
        if not self.container:
            return words
        if self.container_runtime == "pyxis":
            return (f"--container-image={shlex.quote(self.container)} --container-workdir={job_dir} "
                    f"--container-mounts={shlex.quote(','.join(dict.fromkeys(binds)))} {words}")
        bind_args = " ".join(f"--bind {shlex.quote(b)}" for b in dict.fromkeys(binds))
        return f"apptainer exec --nv {bind_args} --pwd {job_dir} {shlex.quote(self.container)} {words}"

    # ------------------------------------------------------------------ run, follow, cancel
    def run(self, record, store, log: BinaryIO, stop: threading.Event) -> int:
        job_dir = store.job_dir(record.job_id).resolve()
        script = job_dir / "slurm.sbatch"
        script.write_text(self.script(record, store))
        submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
        if submitted.returncode != 0:
            raise SkillBankError(f"sbatch refused the job: {submitted.stderr.strip().splitlines()[-1:]}")
        slurm_id = submitted.stdout.strip().split(";")[0]
        (job_dir / JOB_ID_FILE).write_text(slurm_id + "\n")
        log.write(f"[slurm] submitted job {slurm_id}\n".encode())
        offset, cancelled = 0, False
        while True:
            state, exit_code = job_state(slurm_id)
            offset = _copy_new(job_dir / f"slurm-{slurm_id}.out", offset, log)
            if stop.is_set() and not cancelled:
                subprocess.run(["scancel", slurm_id], capture_output=True)
                cancelled = True
            if state not in RUNNING_STATES:
                time.sleep(0.5)
                _copy_new(job_dir / f"slurm-{slurm_id}.out", offset, log)
                log.write(f"[slurm] job {slurm_id} {state} exit {exit_code}\n".encode())
                if state in CANCELLED_STATES:
                    return 143
                if state == "COMPLETED":
                    return 0
                return exit_code or 1
            time.sleep(self.poll_s)

    def stop_orphan(self, record, store) -> str | None:
        path = store.job_dir(record.job_id) / JOB_ID_FILE
        if not path.is_file():
            return None
        slurm_id = path.read_text().strip()
        if job_state(slurm_id)[0] in RUNNING_STATES:
            subprocess.run(["scancel", slurm_id], capture_output=True)
            return f"its Slurm job {slurm_id}"
        return None


def job_state(slurm_id: str) -> tuple[str, int]:
    """(state, exit code) from scontrol, which knows a job until MinJobAge after it ends; UNKNOWN if gone."""
    shown = subprocess.run(["scontrol", "-o", "show", "job", slurm_id], capture_output=True, text=True)
    if shown.returncode != 0:
        return "UNKNOWN", 1
    fields = dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)
    code, _, signal_no = fields.get("ExitCode", "0:0").partition(":")
    exit_code = int(code) if code.isdigit() else 1
    if signal_no.isdigit() and int(signal_no):
        exit_code = 128 + int(signal_no)
    return fields.get("JobState", "UNKNOWN"), exit_code


def _sinfo(fields: str) -> list[tuple[str, ...]] | None:
    """sinfo's rows (one per partition and node state), split on '|'; None if the controller does not answer."""
    shown = subprocess.run(["sinfo", "-h", "-o", fields], capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    return [tuple(line.split("|")) for line in shown.stdout.splitlines() if line.strip()]


def _gpus(gres: str) -> int:
    """GPUs per node in a GRES string: gpu:4, gpu:a100:8(S:0-1), gpu:a100:4,gpu:v100:2 (6), (null) (0)."""
    return sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def _copy_new(path: Path, offset: int, log: BinaryIO) -> int:
    """Append what the job wrote to its output file since `offset`; returns the new offset."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return offset
    if chunk:
        log.write(chunk)
    return offset + len(chunk)
