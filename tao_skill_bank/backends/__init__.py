"""Job backends: run the engine command of a job as a local process or in a Docker container."""
from __future__ import annotations

from ..errors import SkillBankError
from .base import Backend
from .docker_backend import DockerBackend
from .local import LocalBackend

BACKENDS: dict[str, type[Backend]] = {"local": LocalBackend, "docker": DockerBackend}


def get_backend(name: str, **options) -> Backend:
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise SkillBankError(f"backend {name!r} is unknown; use one of {', '.join(BACKENDS)}") from None
    return cls(**options)
