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
