from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO

from ..errors import SkillBankError

MULTI_NODE_ENV = ("WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NUM_GPU_PER_NODE")
REPO = Path(__file__).resolve().parents[2]


def host_python_options() -> dict:
    """Run a bare image (docker/build_host_image.sh) on this host's Python: its system folders, interpreter and
    the repo with its virtualenv are mounted read-only at the same paths."""
    import sys
    paths = ["/usr", "/lib", "/lib64", "/bin", sys.base_prefix, str(REPO)]
    mounts, seen = [], set()
    for path in paths:
        real = os.path.realpath(path)
        if os.path.isdir(real) and path not in seen:
            seen.add(path)
            mounts.append(f"{real}:{path}:ro")
    bin_dir = str(Path(sys.executable).parent)
    return {"mounts": mounts, "env": {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}}


class DockerBackend:
    """The same engine command in a container: job folder mounted read-write, every local input path read-only,
    GPUs through device requests, the multi-node variables passed through."""

    def __init__(self, image: str | None = None, gpus: int = 0, mounts: list[str] | None = None,
                 input_paths: list[str] | None = None, env: dict | None = None, shm_size: str = "2g"):
        self.image, self.gpus, self.shm_size = image, gpus, shm_size
        self.mounts = mounts or []            # extra "host:container[:ro]" binds (e.g. a host Python for tests)
        self.input_paths = input_paths or []  # dataset / checkpoint paths the spec names
        self.env = env or {}

    def _client(self):
        import docker
        from docker.errors import DockerException
        try:
            client = docker.from_env()
            client.ping()
        except DockerException as exc:
            host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            raise SkillBankError(f"docker daemon unreachable ({host}): "
                                 f"{exc.__class__.__name__}; start dockerd or use --backend local") from None
        return client

    def check(self) -> None:
        from docker.errors import ImageNotFound
        if not self.image:
            raise SkillBankError("docker backend: no image; pass --image or set container_image in the skill's "
                                 "references/skill_info.yaml")
        client = self._client()
        try:
            client.images.get(self.image)
        except ImageNotFound:
            raise SkillBankError(f"docker image {self.image!r} not found locally; build it (make docker-image) "
                                 "or pass --image") from None

    def volumes(self, job_dir: Path) -> dict:
        binds = {str(job_dir): {"bind": str(job_dir), "mode": "rw"}}
        for path in self.input_paths:
            if os.path.isabs(path) and os.path.exists(path) and not str(path).startswith(str(job_dir)):
                binds.setdefault(str(path), {"bind": str(path), "mode": "ro"})
        for spec in self.mounts:
            host, container, *mode = spec.split(":")
            binds[host] = {"bind": container, "mode": mode[0] if mode else "rw"}
        return binds

    def run(self, record, store, log: BinaryIO, stop: threading.Event) -> int:
        import docker
        client = self._client()
        job_dir = store.job_dir(record.job_id).resolve()
        env = {k: os.environ[k] for k in MULTI_NODE_ENV if k in os.environ}
        env.update(self.env)
        env.setdefault("NUM_GPU_PER_NODE", str(self.gpus))
        env.setdefault("HOME", "/tmp")
        requests = [docker.types.DeviceRequest(count=self.gpus, capabilities=[["gpu"]])] if self.gpus else []
        container = client.containers.run(self.image, record.command, detach=True, volumes=self.volumes(job_dir),
                                          environment=env, device_requests=requests, working_dir=str(job_dir),
                                          user=f"{os.getuid()}:{os.getgid()}", shm_size=self.shm_size,
                                          labels={"tao_skill_bank.job_id": record.job_id})
        stopper = threading.Thread(target=self._stop_on_cancel, args=(container, stop), daemon=True)
        stopper.start()
        try:
            for chunk in container.logs(stream=True, follow=True):
                log.write(chunk)
            return int(container.wait()["StatusCode"])
        finally:
            container.remove(force=True)

    def stop_orphan(self, record, store) -> str | None:
        """The job's containers (found by label) go with their dead supervisor."""
        from docker.errors import DockerException
        try:
            found = self._client().containers.list(filters={"label": f"tao_skill_bank.job_id={record.job_id}"})
            for container in found:
                container.stop(timeout=10)
                container.remove(force=True)
        except (DockerException, SkillBankError):
            return None
        return f"its container {found[0].short_id}" if found else None

    @staticmethod
    def _stop_on_cancel(container, stop: threading.Event) -> None:
        stop.wait()
        try:
            container.stop(timeout=10)
        except Exception:  # noqa: BLE001 - already gone
            pass
