"""Job backends: the engine command of a job as a local process, in a Docker container, as a Slurm batch job or
as a Kubernetes Job."""
from __future__ import annotations

from ..errors import SkillBankError
from .base import Backend
from .docker_backend import DockerBackend
from .kubernetes import KubernetesBackend
from .local import LocalBackend
from .slurm import SlurmBackend

BACKENDS: dict[str, type[Backend]] = {"local": LocalBackend, "docker": DockerBackend, "slurm": SlurmBackend,
                                      "kubernetes": KubernetesBackend}


def get_backend(name: str, **options) -> Backend:
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise SkillBankError(f"backend {name!r} is unknown; use one of {', '.join(BACKENDS)}") from None
    import inspect
    known = set(inspect.signature(cls).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        raise SkillBankError(f"--backend-option {unknown[0]}: not an option of the {name} backend; it takes "
                             f"{', '.join(sorted(known))}")
    return cls(**options)
