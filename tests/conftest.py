from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from helpers import EXAMPLE, REPO, free_port

sys.path.insert(0, str(REPO))
torch.set_num_threads(2)


@pytest.fixture
def example_copy(tmp_path) -> Path:
    """A writable copy of the example data set (tests never touch the committed files)."""
    dst = tmp_path / "front3d_tiny"
    shutil.copytree(EXAMPLE, dst)
    return dst


@pytest.fixture
def cache_env(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TAO_SKILL_BANK_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto in server mode) on localhost."""
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import requests
    # moto answers its first request only once its services are imported: on a busy 2-core machine that can take
    # seconds after the port opens, so a slow answer (a read timeout) is waited for like a refused connection
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(url, timeout=5)
            break
        except requests.RequestException as error:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server on {url} did not answer within 60 s: {error}") from error
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_endpoint


def _postgres_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server in a temporary cluster on localhost (trust auth), as an SQLAlchemy URL."""
    bindir = _postgres_bindir()
    if bindir is None:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("REQUIRE_POSTGRES is set but no PostgreSQL server (initdb) is installed")
        pytest.skip("PostgreSQL server not installed (CI installs it and sets REQUIRE_POSTGRES=1)")
    base = Path(tempfile.mkdtemp(prefix="nvp-pg-"))
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "sweeper", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-o",
                    f"-p {port} -h 127.0.0.1 -k {base}", "start"], check=True, capture_output=True)
    yield f"postgresql+psycopg://sweeper@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def docker_available() -> bool:
    try:
        import docker
        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="session")
def docker_image():
    """An image built locally (no registry here): an empty rootfs run with the host's Python bind-mounted."""
    if not docker_available():
        if os.environ.get("REQUIRE_DOCKER"):
            pytest.fail("REQUIRE_DOCKER is set but the docker daemon is unreachable")
        pytest.skip("docker daemon unreachable (CI sets REQUIRE_DOCKER=1 and starts dockerd)")
    subprocess.run(["bash", str(REPO / "docker" / "build_host_image.sh")], check=True, capture_output=True)
    return "nvpanoptix3d:host"


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node Slurm cluster (munged, slurmctld, slurmd) on localhost; yields the SLURM_CONF path."""
    tools = [shutil.which(t) for t in ("munged", "slurmctld", "slurmd", "sbatch")]
    if not all(tools) or os.geteuid() != 0:
        if os.environ.get("REQUIRE_SLURM"):
            pytest.fail("REQUIRE_SLURM is set but Slurm (slurm-wlm, munge) is not installed or not root")
        pytest.skip("Slurm not installed (CI installs slurm-wlm and munge and sets REQUIRE_SLURM=1)")
    base = tmp_path_factory.mktemp("slurm")
    munge = base / "munge"
    munge.mkdir()
    (munge / "munge.key").write_bytes(os.urandom(1024))
    os.chmod(munge / "munge.key", 0o400)
    socket_path = munge / "munge.socket"
    subprocess.run(["munged", "--force", f"--socket={socket_path}", f"--key-file={munge / 'munge.key'}",
                    f"--log-file={munge / 'munged.log'}", f"--pid-file={munge / 'munged.pid'}",
                    f"--seed-file={munge / 'munged.seed'}"], check=True)
    host = socket.gethostname()
    for sub in ("state", "spool"):
        (base / sub).mkdir()
    conf = base / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=test", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        f"AuthInfo=socket={socket_path}", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", f"StateSaveLocation={base / 'state'}",
        f"SlurmdSpoolDir={base / 'spool'}", f"SlurmctldPidFile={base / 'slurmctld.pid'}",
        f"SlurmdPidFile={base / 'slurmd.pid'}", f"SlurmctldLogFile={base / 'slurmctld.log'}",
        f"SlurmdLogFile={base / 'slurmd.log'}", f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        "MinJobAge=600", "ReturnToService=2", "KillWait=20", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "MpiDefault=none",
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory=4000 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(["slurmctld", "-c"], env=env, check=True)
    subprocess.run(["slurmd", "-c"], env=env, check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        if info.stdout.strip() in ("idle", "mixed"):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"slurmd did not come up: {(base / 'slurmd.log').read_text()[-2000:]}")
    yield str(conf)
    for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
        try:
            os.kill(int((base / pid_file).read_text()), 15)
        except (OSError, ValueError):
            pass
