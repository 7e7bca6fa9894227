"""Dataset roots (local folders or s3://bucket/prefix) -> the mandatory data-source overrides of an action."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import SkillBankError
from .skill import Skill
from .spec import schema_node

_FALLBACK = {"eval_dataset": "train_datasets", "inference_dataset": "eval_dataset"}
_ERROR_FOR_FILE = {"meta/frustum_mask.npz": "Missing frustum mask"}


@dataclass(frozen=True)
class DatasetRoots:
    train_datasets: str | None = None
    eval_dataset: str | None = None
    inference_dataset: str | None = None

    def root_for(self, source: str) -> str | None:
        while source:
            root = getattr(self, source)
            if root:
                return root
            source = _FALLBACK.get(source)
        return None


def cache_dir() -> Path:
    return Path(os.environ.get("TAO_SKILL_BANK_CACHE", Path.home() / ".cache" / "tao_skill_bank"))


def s3_client():
    import boto3
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def split_s3(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def fetch_s3_prefix(url: str) -> Path:
    """Mirror an S3 prefix into the cache; the folder name hashes the listing, so a changed object is refetched."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    bucket, prefix = split_s3(url)
    client = s3_client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/" if prefix else "")
        objects = [(o["Key"], o["ETag"], o["Size"]) for page in pages for o in page.get("Contents", [])]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == "NoSuchBucket":
            raise SkillBankError(f"{url}: bucket {bucket!r} does not exist at "
                                 f"{os.environ.get('AWS_ENDPOINT_URL', 'AWS')}; create it or fix the URL") from None
        raise SkillBankError(f"{url}: S3 error {code}: {exc}") from None
    except EndpointConnectionError:
        raise SkillBankError(f"{url}: cannot reach S3 endpoint {os.environ.get('AWS_ENDPOINT_URL')}; "
                             "check AWS_ENDPOINT_URL") from None
    except NoCredentialsError:
        raise SkillBankError(f"{url}: no S3 credentials for bucket {bucket!r} at "
                             f"{os.environ.get('AWS_ENDPOINT_URL') or 'AWS'} (read AWS_ACCESS_KEY_ID / "
                             "AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials); set them") from None
    if not objects:
        raise SkillBankError(f"{url}: no objects under this prefix; upload the dataset or fix the URL")
    digest = hashlib.sha256(json.dumps(sorted(objects)).encode()).hexdigest()[:24]
    target = cache_dir() / "s3" / digest
    if (target / ".complete").is_file():
        return target
    cache_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=cache_dir()))
    for key, _, _ in objects:
        rel = key[len(prefix):].lstrip("/") if prefix else key
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(dest))
    (staging / ".complete").write_text(url + "\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, target)  # atomic: a half-fetched folder is never seen as complete
    except OSError:  # another process won the race
        shutil.rmtree(staging, ignore_errors=True)
    return target


def localize(root: str) -> Path:
    if root.startswith("s3://"):
        return fetch_s3_prefix(root)
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise SkillBankError(f"dataset root {root}: not a folder; give a local folder or s3://bucket/prefix")
    return path


def data_overrides(skill: Skill, action: str, roots: DatasetRoots, fetch: bool = True) -> dict[str, str]:
    """One override per row of the skill's requirement table, each checked to exist. fetch=False (a dry run)
    never touches the network: s3:// roots stay URLs, unchecked."""
    overrides: dict[str, str] = {}
    local: dict[str, Path] = {}
    schema = skill.load_schema(action) if skill.requirements_for(action) else {}
    for req in skill.requirements_for(action):
        if req.relative_path in (schema_node(schema, req.spec_key) or {}).get("enum", []):   # a value, not a file
            overrides[req.spec_key] = req.relative_path
            continue
        root = roots.root_for(req.source)
        if root is None:
            flag = "--" + req.source.replace("_datasets", "_dataset").replace("_", "-")
            raise SkillBankError(f"{action}: {req.spec_key} needs a {req.source} root; pass {flag} DIR")
        if root.startswith("s3://") and not fetch:
            overrides[req.spec_key] = "/".join(filter(None, [root.rstrip("/"), req.relative_path.strip(".")]))
            continue
        if root not in local:
            local[root] = localize(root)
        found = [local[root] / rel for rel in req.alternatives or (req.relative_path,)
                 if (local[root] / rel).exists()]
        if found:
            overrides[req.spec_key] = str(found[0].resolve())
        elif not req.optional:
            wanted = " or ".join(req.alternatives or (req.relative_path,))
            fix = skill.error_fix(_ERROR_FOR_FILE[req.relative_path]) if req.relative_path in _ERROR_FOR_FILE \
                else f"the dataset root must contain {wanted}"
            raise SkillBankError(f"{root}: {wanted} not found (needed for {req.spec_key}); {fix}")
    return overrides
