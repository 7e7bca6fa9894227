"""The skill bank SDK: skills, specs, data sources, parent-model inference, jobs and their backends.

    from tao_skill_bank import ActionRequest, DatasetRoots, JobStore, prepare, launch, wait
    store = JobStore("jobs")
    job = launch(prepare(ActionRequest("skills/tao-train-nvpanoptix3d", "evaluate",
                                       DatasetRoots(eval_dataset="examples/front3d_tiny")), store), store)
    print(wait(store, job.job_id).status)
"""
from .data_sources import DatasetRoots
from .errors import SkillBankError
from .jobs import JobRecord, JobStore, cancel_job, create_job, wait
from .runner import ActionRequest, PreparedJob, launch, prepare
from .skill import Skill, load_skill


def get_job(job_id: str, jobs_dir: str | None = None) -> JobRecord:
    return JobStore(jobs_dir).get(job_id)


def list_jobs(jobs_dir: str | None = None) -> list[JobRecord]:
    return JobStore(jobs_dir).list()


__all__ = ["ActionRequest", "DatasetRoots", "JobRecord", "JobStore", "PreparedJob", "Skill", "SkillBankError",
           "cancel_job", "create_job", "get_job", "launch", "list_jobs", "load_skill", "prepare", "wait"]
