"""A stand-in for a Kubernetes API server and its nodes, for the tests: it serves the API paths the kubernetes
backend calls over real HTTP, and runs each pod's container command as a process on this host (the image stands
for this host's Python environment). No API server can run on these machines; this one is what the official
client talks to in the tests.

Served: namespaces and nodes (read), Jobs (create, read status, delete), Services (create, delete), pods (list
by label, read log), and Kubeflow PyTorchJobs (create, read status, delete) with the training operator's pod
environment (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK). Every pod's rendezvous address is this host, and each
job gets its own free port for it, as pods would on a cluster network.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from helpers import free_port

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig whose one context points at `server` with a bearer token."""
    import yaml
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "standin"}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "tester"}}]}))
    return path


@dataclass
class Pod:
    name: str
    labels: dict
    annotations: dict
    process: subprocess.Popen
    log: Path

    @property
    def phase(self) -> str:
        code = self.process.poll()
        return "Running" if code is None else "Succeeded" if code == 0 else "Failed"

    def as_json(self) -> dict:
        return {"metadata": {"name": self.name, "labels": self.labels, "annotations": self.annotations},
                "status": {"phase": self.phase}}


@dataclass
class Workload:
    kind: str            # Job | PyTorchJob
    manifest: dict
    pods: list[Pod] = field(default_factory=list)


class KubeStandIn:
    def __init__(self, workdir: Path, namespaces=("default",), node_gpus=(0,)):
        self.workdir, self.namespaces, self.node_gpus = Path(workdir), set(namespaces), list(node_gpus)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workloads: dict[tuple[str, str, str], Workload] = {}   # (namespace, kind, name)
        self.services: set[tuple[str, str]] = set()
        self.requests: list[tuple[str, str]] = []                    # (method, path) in the order served
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code: int, body, content_type: str = "application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") if length else None
                with stand_in.lock:
                    stand_in.requests.append((method, url.path))
                    code, answer = stand_in.route(method, url.path, parse_qs(url.query), body)
                self._answer(code, answer, "text/plain" if isinstance(answer, str) else "application/json")

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        for workload in self.workloads.values():
            self._stop(workload)
        self.server.shutdown()

    # ------------------------------------------------------------------ the API paths
    def route(self, method: str, path: str, query: dict, body):
        not_found = (404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                           "code": 404, "message": f"{path} not found"})
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)", path):
            return (200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": m[1]}}) \
                if m[1] in self.namespaces else not_found
        if path == "/api/v1/nodes":
            return 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [
                {"metadata": {"name": f"node-{i}"}, "status": {"allocatable": {"cpu": "2", "nvidia.com/gpu": str(g)}}}
                for i, g in enumerate(self.node_gpus)]}
        m = re.fullmatch(r"/(?:api/v1|apis/batch/v1|apis/kubeflow\.org/v1)/namespaces/([^/]+)/"
                         r"(jobs|services|pods|pytorchjobs)(?:/([^/]+))?(?:/(status|log))?", path)
        if not m or m[1] not in self.namespaces:
            return not_found
        namespace, plural, name, sub = m.groups()
        kind = {"jobs": "Job", "pytorchjobs": "PyTorchJob"}.get(plural)
        if method == "POST" and plural == "services":
            self.services.add((namespace, body["metadata"]["name"]))
            return 201, body
        if method == "POST" and kind:
            workload = Workload(kind, body)
            self.workloads[(namespace, kind, body["metadata"]["name"])] = workload
            self._start(workload)
            return 201, body
        if plural == "pods" and name is None:
            selector = dict(kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",") if kv)
            pods = [p.as_json() for w in self.workloads.values() for p in w.pods
                    if all(p.labels.get(k) == v for k, v in selector.items())]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
        if plural == "pods" and sub == "log":
            pod = next((p for w in self.workloads.values() for p in w.pods if p.name == name), None)
            return (200, pod.log.read_text(errors="replace")) if pod else not_found
        if method == "DELETE" and plural == "services":
            self.services.discard((namespace, name))
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        workload = self.workloads.get((namespace, kind, name))
        if workload is None:
            return not_found
        if method == "DELETE":
            self._stop(workload)
            del self.workloads[(namespace, kind, name)]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 200, {**workload.manifest, "status": self._status(workload)}

    # ------------------------------------------------------------------ the nodes and the controllers
    def _start(self, workload: Workload):
        """Run the pods: a Job's completions with their completion index, or a PyTorchJob's Master then its
        Workers with the operator's environment."""
        name, port = workload.manifest["metadata"]["name"], str(free_port())
        if workload.kind == "Job":
            spec = workload.manifest["spec"]
            for index in range(spec.get("completions", 1)):
                self._run_pod(workload, f"{name}-{index}", spec["template"], {COMPLETION_INDEX: str(index)},
                              {"MASTER_PORT": port}, {f"{name}-0.{name}": "127.0.0.1"})
            return
        specs = workload.manifest["spec"]["pytorchReplicaSpecs"]
        roles = [("master", 0, specs["Master"])] + [("worker", i, specs["Worker"])
                                                    for i in range(specs.get("Worker", {}).get("replicas", 0))]
        for rank, (role, index, replica) in enumerate(roles):
            operator_env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": str(len(roles)),
                            "RANK": str(rank), "PYTHONUNBUFFERED": "1"}
            template = {**replica["template"], "metadata": {"labels": {
                **replica["template"]["metadata"]["labels"], "training.kubeflow.org/replica-type": role,
                "training.kubeflow.org/replica-index": str(index)}}}
            self._run_pod(workload, f"{name}-{role}-{index}", template, {}, operator_env, {})

    def _run_pod(self, workload: Workload, pod_name: str, template: dict, annotations: dict, injected: dict,
                 dns: dict):
        container = template["spec"]["containers"][0]
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = dns.get(item["value"], item["value"])
            else:   # a fieldRef to the pod's own annotation
                key = re.search(r"annotations\['([^']+)'\]", item["valueFrom"]["fieldRef"]["fieldPath"])[1]
                env[item["name"]] = annotations[key]
        env.update(injected)
        log = self.workdir / f"{pod_name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(container["command"], cwd=container.get("workingDir"), env=env,
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        workload.pods.append(Pod(pod_name, dict(template["metadata"]["labels"]), annotations, process, log))

    def _status(self, workload: Workload) -> dict:
        phases = [p.phase for p in workload.pods]
        if workload.kind == "Job":
            status = {"succeeded": phases.count("Succeeded"), "failed": phases.count("Failed"),
                      "active": phases.count("Running")}
            if status["failed"]:
                status["conditions"] = [{"type": "Failed", "status": "True"}]
            elif status["succeeded"] == len(phases):
                status["conditions"] = [{"type": "Complete", "status": "True"}]
            return status
        conditions = [{"type": "Created", "status": "True"}]
        if "Failed" in phases:
            conditions.append({"type": "Failed", "status": "True"})
        elif all(p == "Succeeded" for p in phases):
            conditions.append({"type": "Succeeded", "status": "True"})
        else:
            conditions.append({"type": "Running", "status": "True"})
        return {"conditions": conditions}

    def _stop(self, workload: Workload):
        """Pod termination as the kubelet does it: SIGTERM to the container's processes, then SIGKILL."""
        for pod in workload.pods:
            if pod.process.poll() is None:
                os.killpg(pod.process.pid, signal.SIGTERM)
        for pod in workload.pods:
            try:
                pod.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(pod.process.pid, signal.SIGKILL)
                pod.process.wait()
