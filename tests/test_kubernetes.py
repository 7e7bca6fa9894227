"""The Kubernetes backend's manifests, validated offline against the Kubernetes API schemas (no API server can
run here), and its one-line refusals."""
from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from tao_skill_bank.backends.kubernetes import KubernetesBackend
from tao_skill_bank.errors import SkillBankError
from tao_skill_bank.jobs import JobRecord, JobStore

K8S_VERSION = "1.30.0"


def _manifests(tmp_path, **options) -> list[dict]:
    record = JobRecord("train-20261207-Job_1", "train", "skill", "kubernetes",
                       command=["nvpanoptix3d", "train", "-e", "/store/train-1/spec.yaml"])
    return KubernetesBackend(image="registry.local/nvpanoptix3d:1", pvc="shared-store", **options).manifests(
        record, JobStore(tmp_path))


@pytest.mark.parametrize("nodes, gpus", [(1, 0), (2, 4)])
def test_manifests_are_valid_kubernetes_objects(tmp_path, nodes, gpus):
    manifests = _manifests(tmp_path, nodes=nodes, gpus_per_node=gpus)
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    assert [m["kind"] for m in manifests] == (["Job"] if nodes == 1 else ["Service", "Job"])


def test_several_nodes_are_an_indexed_job_behind_a_headless_service(tmp_path):
    service, job = _manifests(tmp_path, nodes=2, gpus_per_node=4)
    name = job["metadata"]["name"]
    assert name == "train-20261207-job-1" and service["spec"]["clusterIP"] == "None"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == name and pod["restartPolicy"] == "Never"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == f"{name}-0.{name}"
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert env["NVPANOPTIX3D_AUTO_RESUME"]["value"] == "1"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert spec["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["store"] == str(Path(tmp_path).resolve())          # the job store at its own path


def test_refusals_name_what_is_missing(tmp_path, monkeypatch):
    with pytest.raises(SkillBankError, match="no image"):
        KubernetesBackend(pvc="x").check()
    with pytest.raises(SkillBankError, match="no pvc"):
        KubernetesBackend(image="x").check()
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SkillBankError, match="no cluster configuration"):
        KubernetesBackend(image="x", pvc="y").check()


@pytest.mark.slow
def test_two_pods_with_the_manifests_environment_train_as_one_world(tmp_path):
    """The two pods of a 2-node job, as two processes here with the environment the manifest gives each pod
    (NODE_RANK from its completion index; MASTER_ADDR is pod 0's DNS name there, this host here): Lightning
    makes them ranks 0 and 1 of one world of 2, and only rank 0 records."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from helpers import EXAMPLE, REPO, spec_file
    spec = spec_file(tmp_path, [f"dataset.val.json_path={EXAMPLE / 'meta' / 'train.json'}",
                                "dataset.val.batch_size=1", "train.num_nodes=2"])
    results = tmp_path / "store" / "results"
    _, job = _manifests(tmp_path, nodes=2, gpus_per_node=0)
    env_spec = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    with socket.socket() as s:                                   # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pods = []
    for index in range(job["spec"]["completions"]):
        env = {k: v["value"] for k, v in env_spec.items() if "value" in v}
        assert "job-completion-index" in env_spec["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
        env.update(NODE_RANK=str(index), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        env.pop("NVPANOPTIX3D_AUTO_RESUME")                      # a fresh job: nothing to resume
        pods.append(subprocess.Popen([sys.executable, "-m", "nvpanoptix3d", "train", "-e", str(spec),
                                      f"results_dir={results}"], cwd=REPO, env={**os.environ, **env},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [pod.communicate(timeout=900)[0] for pod in pods]
    assert [pod.returncode for pod in pods] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    events = [json.loads(line) for line in (results / "status.json").read_text().splitlines()]
    assert [e["devices"] for e in events if e["event"] == "start"] == [2]       # one world of two processes
    assert [e["event"] for e in events].count("done") == 1                       # recorded once, by rank 0
    assert (results / "checkpoints" / "last.ckpt").is_file()
