"""The engine as a Kubernetes Job, one pod per node, through the official client.

One node: a Job of one pod. Several: an Indexed Job (one pod per node, `completionMode: Indexed`) and a
headless Service, so pod 0 is reachable as `<job>-0.<job>` (MASTER_ADDR) and each pod's node rank is its
completion index (NODE_RANK). The engine reads NODE_RANK, MASTER_ADDR and MASTER_PORT; Lightning derives the
process count from train.num_nodes x train.num_gpus, so no WORLD_SIZE is set here (TAO's manifests use it for
the node count, PyTorch for the process count).

The job folder and the data sit on a PersistentVolumeClaim (`pvc`) mounted at the job store's own path in every
pod. A pod evicted or preempted (DisruptionTarget) is replaced without counting against the back-off limit, and
the engine in the new pod resumes from the job's last checkpoint (NVPANOPTIX3D_AUTO_RESUME).
"""
from __future__ import annotations

import re
import threading
import time
from typing import BinaryIO

from ..errors import SkillBankError

MASTER_PORT = 29500


def _name(job_id: str) -> str:
    """A DNS-1123 label from the job id (lower case, at most 52 characters so pod names fit)."""
    return re.sub(r"[^a-z0-9-]", "-", job_id.lower())[:52].strip("-")


class KubernetesBackend:
    def __init__(self, image: str | None = None, namespace: str = "default", nodes: int = 1, gpus_per_node: int = 0,
                 cpu: str = "4", memory: str = "16Gi", pvc: str | None = None, store_path: str | None = None,
                 service_account: str | None = None, backoff_limit: int = 2, poll_s: float = 5.0,
                 input_paths: list[str] | None = None):
        self.image, self.namespace, self.nodes, self.gpus_per_node = image, namespace, int(nodes), int(gpus_per_node)
        self.cpu, self.memory, self.pvc, self.store_path = cpu, memory, pvc, store_path
        self.service_account, self.backoff_limit, self.poll_s = service_account, int(backoff_limit), float(poll_s)
        self.input_paths = list(input_paths or [])

    # ------------------------------------------------------------------ the manifests
    def manifests(self, record, store) -> list[dict]:
        name = _name(record.job_id)
        labels = {"app.kubernetes.io/name": "tao-skill-bank", "tao-skill-bank/job": name}
        job_dir = str(store.job_dir(record.job_id).resolve())
        mount_path = self.store_path or str(store.root.resolve())
        env = [{"name": "NVPANOPTIX3D_AUTO_RESUME", "value": "1"},
               {"name": "MASTER_ADDR", "value": f"{name}-0.{name}" if self.nodes > 1 else "127.0.0.1"},
               {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
               {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
                   "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
        resources = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus_per_node:
            resources["nvidia.com/gpu"] = str(self.gpus_per_node)
        container = {"name": "engine", "image": self.image, "command": list(record.command), "workingDir": job_dir,
                     "env": env, "resources": {"limits": resources, "requests": dict(resources)},
                     "ports": [{"containerPort": MASTER_PORT, "name": "rendezvous"}],
                     "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}
        volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
        if self.pvc:
            container["volumeMounts"].append({"name": "store", "mountPath": mount_path})
            volumes.append({"name": "store", "persistentVolumeClaim": {"claimName": self.pvc}})
        pod = {"restartPolicy": "Never", "containers": [container], "volumes": volumes}
        if self.nodes > 1:
            pod["subdomain"] = name
        if self.service_account:
            pod["serviceAccountName"] = self.service_account
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": self.namespace,
                                                                      "labels": labels},
               "spec": {"completionMode": "Indexed", "completions": self.nodes, "parallelism": self.nodes,
                        "backoffLimit": self.backoff_limit,
                        # an evicted or preempted pod is replaced without using up the back-off limit
                        "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [
                            {"type": "DisruptionTarget", "status": "True"}]}]},
                        "template": {"metadata": {"labels": labels}, "spec": pod}}}
        out = [job]
        if self.nodes > 1:
            out.insert(0, {"apiVersion": "v1", "kind": "Service",
                           "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
                           "spec": {"clusterIP": "None", "selector": labels,
                                    "ports": [{"name": "rendezvous", "port": MASTER_PORT}]}})
        return out

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
                config.load_kube_config()
            except (config.ConfigException, OSError) as exc:
                raise SkillBankError(f"kubernetes backend: no cluster configuration ({exc}); set KUBECONFIG or run "
                                     "inside the cluster") from None
        return client

    def check(self) -> None:
        if not self.image:
            raise SkillBankError("kubernetes backend: no image; pass --backend-option image=REGISTRY/IMAGE:TAG")
        if not self.pvc:
            raise SkillBankError("kubernetes backend: no pvc; the job store must be on a PersistentVolumeClaim "
                                 "every pod mounts: pass --backend-option pvc=CLAIM")
        self._api()

    def run(self, record, store, log: BinaryIO, stop: threading.Event) -> int:
        client = self._api()
        batch, core = client.BatchV1Api(), client.CoreV1Api()
        for manifest in self.manifests(record, store):
            if manifest["kind"] == "Service":
                core.create_namespaced_service(self.namespace, manifest)
            else:
                batch.create_namespaced_job(self.namespace, manifest)
        name = _name(record.job_id)
        log.write(f"[kubernetes] created job {self.namespace}/{name}\n".encode())
        seen = 0
        while True:
            if stop.is_set():
                self._delete(client, name)
                return 143
            status = batch.read_namespaced_job_status(name, self.namespace).status
            seen = self._copy_logs(core, name, seen, log)
            if status.succeeded and status.succeeded >= self.nodes:
                return 0
            if any(c.type == "Failed" and c.status == "True" for c in status.conditions or []):
                return 1
            time.sleep(self.poll_s)

    def _copy_logs(self, core, name: str, seen: int, log: BinaryIO) -> int:
        """The node-rank-0 pod's log, from where the last call stopped (a replaced pod starts a new log)."""
        pods = core.list_namespaced_pod(self.namespace, label_selector=f"tao-skill-bank/job={name}").items
        first = [p for p in pods if (p.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index")
                 == "0" and p.status.phase in ("Running", "Succeeded", "Failed")]
        if not first:
            return seen
        text = core.read_namespaced_pod_log(first[-1].metadata.name, self.namespace)
        if len(text) < seen:  # a new pod
            seen = 0
        log.write(text[seen:].encode())
        return len(text)

    def _delete(self, client, name: str) -> None:
        options = client.V1DeleteOptions(propagation_policy="Foreground")
        client.BatchV1Api().delete_namespaced_job(name, self.namespace, body=options)
        if self.nodes > 1:
            client.CoreV1Api().delete_namespaced_service(name, self.namespace)

    def stop_orphan(self, record, store) -> str | None:
        try:
            self._delete(self._api(), _name(record.job_id))
        except Exception:  # noqa: BLE001 - gone already, or no cluster reachable from here
            return None
        return f"its Kubernetes job {_name(record.job_id)}"
