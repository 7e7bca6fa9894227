"""The Kubernetes backend: its manifests validated offline against the Kubernetes API schemas, its one-line
refusals, and jobs through the official client against a stand-in API server (tests/kube_standin.py; no real one
can run here) whose nodes run the pods on this machine."""
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


# ---------------------------------------------------------------------- through the client, against the stand-in
@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """An API server stand-in (real HTTP; its nodes run each pod's command here) that the official client reaches
    through a kubeconfig: namespaces default and ml, two nodes with 0 and 2 allocatable GPUs."""
    from kube_standin import KubeStandIn, kubeconfig
    standin = KubeStandIn(tmp_path / "nodes", namespaces=("default", "ml"), node_gpus=(0, 2))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", standin.url)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield standin
    standin.close()


def test_the_cluster_is_asked_before_a_job_is_made(cluster, tmp_path, monkeypatch):
    KubernetesBackend(image="x", pvc="store", namespace="ml", gpus_per_node=2).check()
    assert ("GET", "/api/v1/namespaces/ml") in cluster.requests and ("GET", "/api/v1/nodes") in cluster.requests
    with pytest.raises(SkillBankError, match="namespace nope does not exist; pass --namespace"):
        KubernetesBackend(image="x", pvc="store", namespace="nope").check()
    with pytest.raises(SkillBankError, match="4 GPUs per node asked; the cluster's nodes have at most 2"):
        KubernetesBackend(image="x", pvc="store", gpus_per_node=4).check()
    from helpers import free_port
    from kube_standin import kubeconfig
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "dead", f"http://127.0.0.1:{free_port()}")))
    with pytest.raises(SkillBankError, match=r"the API server http://127.0.0.1:\d+ is unreachable"):
        KubernetesBackend(image="x", pvc="store").check()


def test_a_pytorchjob_is_a_master_and_workers_of_valid_pod_templates(tmp_path):
    (job,) = _manifests(tmp_path, nodes=3, gpus_per_node=8, job_kind="pytorchjob")
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {role: r["replicas"] for role, r in replicas.items()} == {"Master": 1, "Worker": 2}
    for replica in replicas.values():     # the operator makes pods of these templates: each must be a valid one
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                      "template": replica["template"]}, K8S_VERSION, strict=True)
        container = replica["template"]["spec"]["containers"][0]
        assert container["name"] == "pytorch" and container["ports"][0]["name"] == "pytorchjob-port"
        assert container["command"][-4:] == ["nvpanoptix3d", "train", "-e", "/store/train-1/spec.yaml"]
    with pytest.raises(SkillBankError, match="job_kind 'mpijob': use job or pytorchjob"):
        KubernetesBackend(job_kind="mpijob")


def _submit(capsys, tmp_path, *extra, wait=True):
    import json

    from helpers import EXAMPLE, SKILL, TINY_OVERRIDES, TINY_TRAIN

    from runners.tao_run_action import main as run_action
    code = run_action(["--skill", str(SKILL), "--json", "--action", "train", "--automl-policy", "off",
                       "--train-dataset", str(EXAMPLE), "--jobs-dir", str(tmp_path / "jobs"), "--ptm", "none",
                       "--backend", "kubernetes", "--image", "registry.local/nvpanoptix3d:1", "--pvc", "store",
                       "--namespace", "ml", "--backend-option", "poll_s=0.5",
                       *(a for o in TINY_OVERRIDES + TINY_TRAIN for a in ("--override", o)), *extra,
                       *([] if wait else ["--no-wait"])])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["ok"], result
    return result


@pytest.mark.slow
def test_a_train_job_runs_through_the_client_and_reports_done(cluster, capsys, tmp_path):
    result = _submit(capsys, tmp_path)
    assert result["status"] == "done"
    logs = (tmp_path / "jobs" / result["job_id"] / "logs.txt").read_text()
    assert "[kubernetes] created job ml/" in logs and "succeeded" in logs
    assert "[init]" in logs or "epoch" in logs                              # the pod's own output, copied
    served = {(method, path.rsplit("/", 1)[-1]) for method, path in cluster.requests}
    assert {("POST", "jobs"), ("GET", "status"), ("GET", "log")} <= served
    assert (tmp_path / "jobs" / result["job_id"] / "results" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("job_kind, worker", [("job", "-1"), ("pytorchjob", "-worker-0")])
def test_a_two_node_job_trains_as_one_world(cluster, capsys, tmp_path, job_kind, worker):
    """Two pods with the environment each gets: an Indexed Job's NODE_RANK from the completion index, or the
    training operator's RANK and WORLD_SIZE through the PyTorchJob container's entry. Lightning makes them ranks 0
    and 1 of one world of 2 processes, and only rank 0 records."""
    import json

    from helpers import EXAMPLE
    result = _submit(capsys, tmp_path, "--nodes", "2", "--backend-option", f"job_kind={job_kind}", "--override",
                     f"dataset.val.json_path={EXAMPLE / 'meta' / 'train.json'}")   # a frame for each process
    assert result["status"] == "done"
    pods = {p.name: p.process.returncode for w in cluster.workloads.values() for p in w.pods}
    assert sorted(pods.values()) == [0, 0] and any(name.endswith(worker) for name in pods)
    events = [json.loads(line) for line in (tmp_path / "jobs" / result["job_id"] / "results" / "status.json")
              .read_text().splitlines()]
    assert [e["devices"] for e in events if e["event"] == "start"] == [2]
    assert [e["event"] for e in events].count("done") == 1


@pytest.mark.slow
def test_cancel_deletes_the_job_and_its_pods(cluster, capsys, tmp_path):
    import json
    import time

    from helpers import SKILL

    from runners.tao_run_action import main as run_action
    submitted = _submit(capsys, tmp_path, "--override", "train.num_epochs=200", wait=False)
    deadline = time.monotonic() + 300
    while not any(w.pods and w.pods[0].phase == "Running" for w in cluster.workloads.values()):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    pods = [p for w in cluster.workloads.values() for p in w.pods]
    argv = ["--skill", str(SKILL), "--jobs-dir", str(tmp_path / "jobs"), "--json"]
    assert run_action([*argv, "--cancel", submitted["job_id"]]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "cancelled"
    assert any(method == "DELETE" and "/jobs/" in path for method, path in cluster.requests)
    assert not cluster.workloads and all(p.process.poll() is not None for p in pods)
