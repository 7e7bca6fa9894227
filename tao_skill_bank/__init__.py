"""The skill bank SDK: skills, specs, data sources, parent-model inference, jobs and their backends.

    from tao_skill_bank import ActionRequest, DatasetRoots, JobStore, prepare, launch, wait
    store = JobStore("jobs")
    job = launch(prepare(ActionRequest("skills/tao-train-nvpanoptix3d", "evaluate",
                                       DatasetRoots(eval_dataset="examples/front3d_tiny")), store), store)
    print(wait(store, job.job_id).status)
"""
import importlib

# imported on first use, so that the engine can use the small modules (safe_yaml, conditions) without pulling in
# the SDK's dependencies (jsonschema, boto3, docker, optuna)
_EXPORTS = {"DatasetRoots": "data_sources", "SkillBankError": "errors", "JobRecord": "jobs", "JobStore": "jobs",
            "cancel_job": "jobs", "create_job": "jobs", "wait": "jobs", "ActionRequest": "runner",
            "PreparedJob": "runner", "launch": "runner", "prepare": "runner", "Skill": "skill",
            "load_skill": "skill"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_job(job_id: str, jobs_dir: str | None = None):
    from .jobs import JobStore
    return JobStore(jobs_dir).get(job_id)


def list_jobs(jobs_dir: str | None = None) -> list:
    from .jobs import JobStore
    return JobStore(jobs_dir).list()


__all__ = ["ActionRequest", "DatasetRoots", "JobRecord", "JobStore", "PreparedJob", "Skill", "SkillBankError",
           "cancel_job", "create_job", "get_job", "launch", "list_jobs", "load_skill", "prepare", "wait"]
