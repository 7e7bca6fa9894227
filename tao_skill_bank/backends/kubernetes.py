"""The engine as a Kubernetes Job, one pod per node, through the official client.

One node: a Job of one pod. Several: an Indexed Job (one pod per node, `completionMode: Indexed`) and a
headless Service, so pod 0 is reachable as `<job>-0.<job>` (MASTER_ADDR) and each pod's node rank is its
completion index (NODE_RANK). The engine reads NODE_RANK, MASTER_ADDR and MASTER_PORT; Lightning derives the
process count from train.num_nodes x train.num_gpus, so no WORLD_SIZE is set here (TAO's manifests use it for
the node count, PyTorch for the process count).

`job_kind=pytorchjob` emits a Kubeflow PyTorchJob instead (a Master and nodes - 1 Workers) for clusters that run
the training operator. The operator sets MASTER_ADDR, MASTER_PORT, RANK (the pod's rank, our node rank) and
WORLD_SIZE (the pod count); the container exports RANK as NODE_RANK and unsets RANK and WORLD_SIZE, so Lightning
starts one process per GPU in each pod as it does in the Indexed Job.

The job folder and the data sit on a PersistentVolumeClaim (`pvc`) mounted at the job store's own path in every
pod. A pod evicted or preempted (DisruptionTarget) is replaced without counting against the back-off limit, and
the engine in the new pod resumes from the job's last checkpoint (NVPANOPTIX3D_AUTO_RESUME).
"""
from __future__ import annotations

import os
import re
import threading
import time
from typing import BinaryIO

from ..errors import SkillBankError

MASTER_PORT = 29500
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
REPLICA_TYPE = "training.kubeflow.org/replica-type"
PYTORCHJOB = ("kubeflow.org", "v1", "pytorchjobs")  # group, version, plural
JOB_KINDS = ("job", "pytorchjob")
# the operator's RANK is the pod's rank: with one pod per node, our node rank
PYTORCHJOB_ENTRY = 'export NODE_RANK="${RANK:-0}"; unset RANK WORLD_SIZE; exec "$@"'
API_TIMEOUT = (5, 20)  # connect, read seconds: an unreachable server is one line, not a minute of retries


def _name(job_id: str) -> str:
    """A DNS-1123 label from the job id (lower case, at most 52 characters so pod names fit)."""
    return re.sub(r"[^a-z0-9-]", "-", job_id.lower())[:52].strip("-")


class KubernetesBackend:
    def __init__(self, image: str | None = None, namespace: str = "default", nodes: int = 1, gpus_per_node: int = 0,
                 cpu: str = "4", memory: str = "16Gi", pvc: str | None = None, store_path: str | None = None,
                 service_account: str | None = None, backoff_limit: int = 2, poll_s: float = 5.0,
                 job_kind: str = "job", input_paths: list[str] | None = None):
        if job_kind not in JOB_KINDS:
            raise SkillBankError(f"kubernetes job_kind {job_kind!r}: use {' or '.join(JOB_KINDS)}")
        self.image, self.namespace, self.nodes, self.gpus_per_node = image, namespace, int(nodes), int(gpus_per_node)
        self.cpu, self.memory, self.pvc, self.store_path = cpu, memory, pvc, store_path
        self.service_account, self.backoff_limit, self.poll_s = service_account, int(backoff_limit), float(poll_s)
        self.job_kind, self.input_paths = job_kind, list(input_paths or [])

    # ------------------------------------------------------------------ the manifests
    def manifests(self, record, store) -> list[dict]:
        name = _name(record.job_id)
        if self.job_kind == "pytorchjob":
            return [self._pytorchjob(record, store, name)]
        env = [{"name": "MASTER_ADDR", "value": f"{name}-0.{name}" if self.nodes > 1 else "127.0.0.1"},
               {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
               {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
                   "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}}]
        container = self._container(record, store, "engine", list(record.command), env, "rendezvous")
        template = self._pod_template(record, store, container, restart="Never")
        if self.nodes > 1:
            template["spec"]["subdomain"] = name
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": self._metadata(name),
               "spec": {"completionMode": "Indexed", "completions": self.nodes, "parallelism": self.nodes,
                        "backoffLimit": self.backoff_limit,
                        # an evicted or preempted pod is replaced without using up the back-off limit
                        "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [
                            {"type": "DisruptionTarget", "status": "True"}]}]},
                        "template": template}}
        if self.nodes == 1:
            return [job]
        service = {"apiVersion": "v1", "kind": "Service", "metadata": self._metadata(name),
                   "spec": {"clusterIP": "None", "selector": self._labels(name),
                            "ports": [{"name": "rendezvous", "port": MASTER_PORT}]}}
        return [service, job]

    def _pytorchjob(self, record, store, name: str) -> dict:
        # the operator finds the container by the name `pytorch` and the rendezvous port by `pytorchjob-port`
        command = ["/bin/sh", "-c", PYTORCHJOB_ENTRY, "engine", *record.command]
        container = self._container(record, store, "pytorch", command, [], "pytorchjob-port")
        replicas = {"Master": 1, "Worker": self.nodes - 1}
        return {"apiVersion": "/".join(PYTORCHJOB[:2]), "kind": "PyTorchJob", "metadata": self._metadata(name),
                "spec": {"runPolicy": {"backoffLimit": self.backoff_limit, "cleanPodPolicy": "None"},
                         "pytorchReplicaSpecs": {
                             role: {"replicas": count, "restartPolicy": "OnFailure",
                                    "template": self._pod_template(record, store, container, restart="OnFailure")}
                             for role, count in replicas.items() if count}}}

    def _labels(self, name: str) -> dict:
        return {"app.kubernetes.io/name": "tao-skill-bank", "tao-skill-bank/job": name}

    def _metadata(self, name: str) -> dict:
        return {"name": name, "namespace": self.namespace, "labels": self._labels(name)}

    def _container(self, record, store, name: str, command: list[str], env: list[dict], port_name: str) -> dict:
        resources = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus_per_node:
            resources["nvidia.com/gpu"] = str(self.gpus_per_node)
        mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
        if self.pvc:
            mounts.append({"name": "store", "mountPath": self.store_path or str(store.root.resolve())})
        return {"name": name, "image": self.image, "command": command,
                "workingDir": str(store.job_dir(record.job_id).resolve()),
                "env": [{"name": "NVPANOPTIX3D_AUTO_RESUME", "value": "1"}, *env],
                "resources": {"limits": resources, "requests": dict(resources)},
                "ports": [{"containerPort": MASTER_PORT, "name": port_name}], "volumeMounts": mounts}

    def _pod_template(self, record, store, container: dict, restart: str) -> dict:
        volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
        if self.pvc:
            volumes.append({"name": "store", "persistentVolumeClaim": {"claimName": self.pvc}})
        pod = {"restartPolicy": restart, "containers": [container], "volumes": volumes}
        if self.service_account:
            pod["serviceAccountName"] = self.service_account
        return {"metadata": {"labels": self._labels(_name(record.job_id))}, "spec": pod}

    # ------------------------------------------------------------------ the API
    def _api(self):
        try:
            from kubernetes import client, config
        except ImportError:
            raise SkillBankError("kubernetes backend: the kubernetes package is not installed; pip install "
                                 "kubernetes") from None
        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                # KUBECONFIG as it is now (the client reads it once, at import)
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
            except (config.ConfigException, OSError) as exc:
                raise SkillBankError(f"kubernetes backend: no cluster configuration ({exc}); set KUBECONFIG or run "
                                     "inside the cluster") from None
        return client

    def check(self) -> None:
        if not self.image:
            raise SkillBankError("kubernetes backend: no image; pass --image REGISTRY/IMAGE:TAG")
        if not self.pvc:
            raise SkillBankError("kubernetes backend: no pvc; the job store must be on a PersistentVolumeClaim "
                                 "every pod mounts: pass --pvc CLAIM")
        client = self._api()
        core = client.CoreV1Api()
        self._ask(lambda: core.read_namespace(self.namespace, _request_timeout=API_TIMEOUT),
                  f"namespace {self.namespace}", "pass --namespace NAME (kubectl get namespaces lists them)")
        if self.gpus_per_node:
            nodes = self._ask(lambda: core.list_node(_request_timeout=API_TIMEOUT), "the nodes", "")
            most = max((_gpus(node) for node in nodes.items), default=0) if nodes is not None else None
            if most is not None and self.gpus_per_node > most:
                raise SkillBankError(f"kubernetes backend: {self.gpus_per_node} GPUs per node asked; the cluster's "
                                     f"nodes have at most {most} allocatable nvidia.com/gpu; pass --gpus-per-node "
                                     f"{most} or fewer (train.num_gpus)")

    def _ask(self, call, what: str, fix: str):
        """One API read for a check: None when the user may not read it (the create call will tell)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError
        try:
            return call()
        except ApiException as exc:
            if exc.status == 404:
                raise SkillBankError(f"kubernetes backend: {what} does not exist; {fix}") from None
            if exc.status in (401, 403):
                return None
            raise SkillBankError(f"kubernetes backend: reading {what} failed ({exc.status} {exc.reason})") from None
        except HTTPError as exc:
            from kubernetes.client import Configuration
            host = Configuration.get_default_copy().host   # what _api() loaded
            raise SkillBankError(f"kubernetes backend: the API server {host} is unreachable ({type(exc).__name__}); "
                                 "check the kubeconfig's server and the network") from None

    def run(self, record, store, log: BinaryIO, stop: threading.Event) -> int:
        client = self._api()
        batch, core, custom = client.BatchV1Api(), client.CoreV1Api(), client.CustomObjectsApi()
        for manifest in self.manifests(record, store):
            if manifest["kind"] == "Service":
                core.create_namespaced_service(self.namespace, manifest)
            elif manifest["kind"] == "PyTorchJob":
                custom.create_namespaced_custom_object(*PYTORCHJOB[:2], self.namespace, PYTORCHJOB[2], manifest)
            else:
                batch.create_namespaced_job(self.namespace, manifest)
        name = _name(record.job_id)
        log.write(f"[kubernetes] created {self.job_kind} {self.namespace}/{name}\n".encode())
        seen = 0
        while True:
            if stop.is_set():
                self._delete(client, name)
                return 143
            state = self._state(batch, custom, name)
            seen = self._copy_logs(core, name, seen, log)
            if state != "running":
                log.write(f"[kubernetes] {self.job_kind} {name} {state}\n".encode())
                return 0 if state == "succeeded" else 1
            time.sleep(self.poll_s)

    def _state(self, batch, custom, name: str) -> str:
        """succeeded, failed or running, from the Job's counts and conditions or the PyTorchJob's conditions."""
        if self.job_kind == "pytorchjob":
            status = custom.get_namespaced_custom_object_status(*PYTORCHJOB[:2], self.namespace, PYTORCHJOB[2],
                                                                name).get("status") or {}
            done = {c["type"] for c in status.get("conditions") or [] if c.get("status") == "True"}
            return "succeeded" if "Succeeded" in done else "failed" if "Failed" in done else "running"
        status = batch.read_namespaced_job_status(name, self.namespace).status
        if status.succeeded and status.succeeded >= self.nodes:
            return "succeeded"
        failed = any(c.type == "Failed" and c.status == "True" for c in status.conditions or [])
        return "failed" if failed else "running"

    def _copy_logs(self, core, name: str, seen: int, log: BinaryIO) -> int:
        """The first pod's log (node rank 0), from where the last call stopped (a replaced pod starts a new log)."""
        pods = core.list_namespaced_pod(self.namespace, label_selector=f"tao-skill-bank/job={name}").items
        first = [p for p in pods if p.status.phase in ("Running", "Succeeded", "Failed")
                 and ((p.metadata.annotations or {}).get(COMPLETION_INDEX) == "0"
                      or (p.metadata.labels or {}).get(REPLICA_TYPE) == "master")]
        if not first:
            return seen
        text = core.read_namespaced_pod_log(first[-1].metadata.name, self.namespace)
        if len(text) < seen:  # a new pod
            seen = 0
        log.write(text[seen:].encode())
        return len(text)

    def _delete(self, client, name: str) -> None:
        options = client.V1DeleteOptions(propagation_policy="Foreground")
        if self.job_kind == "pytorchjob":
            client.CustomObjectsApi().delete_namespaced_custom_object(*PYTORCHJOB[:2], self.namespace, PYTORCHJOB[2],
                                                                      name, body=options)
            return
        client.BatchV1Api().delete_namespaced_job(name, self.namespace, body=options)
        if self.nodes > 1:
            client.CoreV1Api().delete_namespaced_service(name, self.namespace)

    def stop_orphan(self, record, store) -> str | None:
        try:
            self._delete(self._api(), _name(record.job_id))
        except Exception:  # noqa: BLE001 - gone already, or no cluster reachable from here
            return None
        return f"its Kubernetes {self.job_kind} {_name(record.job_id)}"


def _gpus(node) -> int:
    value = (node.status.allocatable or {}).get("nvidia.com/gpu", "0")
    return int(value) if str(value).isdigit() else 0
