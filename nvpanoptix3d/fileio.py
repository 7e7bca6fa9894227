"""Deterministic, atomic writers and readers of the data set files (npz, png, exr, tar.gz)."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed without timestamps, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array) if np.ndim(array) == 0 else np.ascontiguousarray(array),
                                      allow_pickle=False)
            zf.writestr(info, member.getvalue(), compresslevel=6)
    write_bytes(Path(path), buf.getvalue())


def load_npz(path: str | Path, key: str = "data") -> np.ndarray:
    with np.load(path) as f:
        return f[key] if key in f else f[f.files[0]]


def save_png(path: str | Path, image: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    write_bytes(Path(path), buf.getvalue())


def save_jpg(path: str | Path, image: np.ndarray, quality: int = 95) -> None:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    write_bytes(Path(path), buf.getvalue())


def load_uint16(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.uint16)


def load_rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def save_exr(path: str | Path, depth: np.ndarray) -> None:
    import OpenEXR
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".exr", dir=path.parent)
    os.close(fd)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Z": np.ascontiguousarray(depth, dtype=np.float32)}) as f:
        f.write(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_exr(path: str | Path) -> np.ndarray:
    import OpenEXR
    with OpenEXR.File(str(path)) as f:
        channels = f.channels()
        name = "Z" if "Z" in channels else sorted(channels)[0]
        data = np.asarray(channels[name].pixels, dtype=np.float32)
    return data[..., 0] if data.ndim == 3 else data


def write_tar_gz(path: str | Path, members: list[tuple[str, Path]]) -> None:
    """A reproducible tar.gz: sorted members, zero mtimes and owners."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for arcname, src in sorted(members):
            data = Path(src).read_bytes()
            info = tarfile.TarInfo(arcname)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    write_bytes(Path(path), buf.getvalue())
