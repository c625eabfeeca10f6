"""Where a run's files live: a local directory, or any URI pyarrow (or fsspec) has a filesystem
for: ``s3://``, ``gs://``, ``abfs://``, ``file://``.

A location is a plain string: an absolute local path, or a URI. Every read and write of the run
dir goes through the functions here, so the driver, the Ray workers on other nodes and next
week's run all see the same files wherever they run. Writes are whole or absent: a local file
is written beside its name and renamed; an object is written under a hidden temporary key and
moved (a server-side copy) onto its name, so a killed write never leaves half an artifact. A
local disk that fills up is :class:`DiskFullError` (the partial file removed first).

Credentials come from the environment the usual way (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, a
node's role; ``AWS_ENDPOINT_URL`` for an S3-compatible store) and are never logged.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from cae_ray.storage.errors import (
    BucketNotFoundError,
    DiskFullError,
    StorageAccessDeniedError,
    StorageError,
    StorageSchemeError,
    StorageUnreachableError,
)
from cae_ray.storage.space import disk_full, free_bytes, is_disk_full

__all__ = [
    "BucketNotFoundError",
    "DiskFullError",
    "StorageAccessDeniedError",
    "StorageError",
    "StorageSchemeError",
    "StorageUnreachableError",
    "disk_full",
    "ensure_writable",
    "exists",
    "files",
    "filesystem",
    "free_bytes",
    "is_disk_full",
    "is_remote",
    "join",
    "location",
    "modified",
    "move",
    "ray_storage",
    "read_bytes",
    "read_table",
    "read_text",
    "remove",
    "size",
    "subdirectories",
    "write_bytes",
    "writing",
]


def location(where: str | os.PathLike[str]) -> str:
    """``where`` as a location: a local path made absolute (Ray workers do not share the
    driver's working dir), ``file://`` as its local path, any other URI as it is."""
    text = os.fspath(where)
    if text.startswith("file://"):
        return str(Path(urlsplit(text).path).resolve())
    if is_remote(text):
        return text.rstrip("/")
    return str(Path(text).resolve())


def is_remote(where: str) -> bool:
    return "://" in where and not where.startswith("file://")


def join(where: str, *names: str) -> str:
    if is_remote(where):
        return "/".join([where.rstrip("/"), *names])
    return os.path.join(where, *names)


def filesystem(where: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem behind ``where`` and the path inside it."""
    if not is_remote(where):
        return pafs.LocalFileSystem(), location(where)
    parts = urlsplit(where)
    # The endpoint and key id pick the filesystem too: one process may meet several (tests).
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    account = (endpoint, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"))
    root_fs, root_path = _root(parts.scheme, parts.netloc, account, where)
    return root_fs, (root_path.rstrip("/") + parts.path).rstrip("/")


@lru_cache(maxsize=32)
def _root(
    scheme: str, netloc: str, account: tuple[str | None, ...], example: str
) -> tuple[pafs.FileSystem, str]:
    # One filesystem per bucket: pyarrow resolves an S3 bucket's region on creation.
    try:
        return pafs.FileSystem.from_uri(f"{scheme}://{netloc}")
    except ImportError as e:  # pyarrow asked fsspec, which names the package it needs
        raise StorageSchemeError(example, scheme, _install(e)) from e
    except (pa.ArrowInvalid, ValueError):
        pass  # a scheme pyarrow has no filesystem for: fsspec may have one
    except OSError as e:
        raise _translated(example, e) from e
    import fsspec

    try:
        spec = fsspec.filesystem(scheme)
    except ImportError as e:  # fsspec knows the scheme and names the package it needs
        raise StorageSchemeError(example, scheme, _install(e)) from e
    except ValueError as e:
        raise StorageSchemeError(example, scheme, None) from e
    return pafs.PyFileSystem(pafs.FSSpecHandler(spec)), netloc


def _install(error: ImportError) -> str:
    """fsspec's "Install s3fs to access S3" as a fix: "pip install s3fs"."""
    text = str(error).splitlines()[0]
    package = text.split()[1] if text.startswith("Install ") else None
    return f"pip install {package}" if package else text


# --- reads ----------------------------------------------------------------------------------


def read_bytes(where: str) -> bytes | None:
    """The file's bytes, or None when there is no such file."""
    fs, path = filesystem(where)
    try:
        with fs.open_input_stream(path) as stream:
            return bytes(stream.read())
    except FileNotFoundError:
        return None
    except OSError as e:
        if _missing(e):
            return None
        raise _translated(where, e) from e


def read_text(where: str) -> str | None:
    data = read_bytes(where)
    return None if data is None else data.decode("utf-8")


def read_table(where: str, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file as a table."""
    import pyarrow.parquet as pq

    fs, path = filesystem(where)
    try:
        return pq.read_table(path, columns=columns, filesystem=fs)
    except OSError as e:
        raise _translated(where, e) from e


def _info(where: str) -> pafs.FileInfo:
    fs, path = filesystem(where)
    try:
        info: pafs.FileInfo = fs.get_file_info(path)
    except OSError as e:
        raise _translated(where, e) from e
    return info


def exists(where: str) -> bool:
    return _info(where).type != pafs.FileType.NotFound


def size(where: str) -> int | None:
    """A file's size in bytes; None when it is not a file."""
    info = _info(where)
    return int(info.size) if info.type == pafs.FileType.File else None


def modified(where: str) -> int | None:
    """A file's modification time in ns; None when it is not there."""
    info = _info(where)
    return None if info.type == pafs.FileType.NotFound else info.mtime_ns


def files(where: str) -> dict[str, int]:
    """Every file under the directory ``where`` (names relative to it, ``/``-separated, in
    order) with its size; empty when there is no such directory."""
    fs, path = filesystem(where)
    try:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError as e:
        raise _translated(where, e) from e
    prefix = path.rstrip("/") + "/"
    return {
        info.path.removeprefix(prefix): int(info.size)
        for info in sorted(found, key=lambda i: i.path)
        if info.type == pafs.FileType.File
    }


def subdirectories(where: str) -> list[str]:
    """The names of the directories right under ``where``."""
    fs, path = filesystem(where)
    try:
        found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as e:
        raise _translated(where, e) from e
    return sorted(i.base_name for i in found if i.type == pafs.FileType.Directory)


# --- writes ---------------------------------------------------------------------------------


@contextmanager
def writing(where: str) -> Iterator[Any]:
    """A stream to write the file ``where`` to; on success the whole file takes its name in one
    rename (locally) or one server-side move (an object store), so readers see the old file
    or the new one, never part of one. On failure ``where`` is left as it was."""
    fs, path = filesystem(where)
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    partial = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.partial"  # hidden from Parquet readers
    try:
        if not is_remote(where):  # an object store has no directories to make
            fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(partial) as stream:
            yield stream
        fs.move(partial, path)
    except OSError as e:
        _delete_quietly(fs, partial)  # before a full disk's free bytes are measured
        raise _translated(where, e) from e
    finally:
        _delete_quietly(fs, partial)


def move(source: str, target: str) -> None:
    """Rename a file of one filesystem (a server-side copy and delete on an object store)."""
    fs, path = filesystem(source)
    try:
        fs.move(path, filesystem(target)[1])
    except OSError as e:
        raise _translated(source, e) from e


def write_bytes(where: str, data: bytes) -> None:
    with writing(where) as stream:
        stream.write(data)


def remove(where: str) -> None:
    """Delete a file or a whole directory, if it is there."""
    fs, path = filesystem(where)
    try:
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif kind == pafs.FileType.File:
            fs.delete_file(path)
    except OSError as e:
        raise _translated(where, e) from e


def ensure_writable(where: str) -> None:
    """Write and delete a probe file under ``where``: a missing bucket, denied credentials or an
    unreachable endpoint fail here, before any work, with their own error."""
    fs, path = filesystem(where)
    probe = f"{path}/.cae_ray-probe-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(probe):
            pass
        fs.delete_file(probe)
    except OSError as e:
        raise _translated(where, e) from e


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)
    except OSError:
        pass  # the write's own error (if any) is the one to report


# --- errors ---------------------------------------------------------------------------------


def _missing(error: OSError) -> bool:
    # Typed where the filesystem says it (local, fsspec); pyarrow's S3 errors are plain OSError.
    if isinstance(error, FileNotFoundError):
        return True
    return "NO_SUCH_KEY" in str(error) or "Path does not exist" in str(error)


def _translated(where: str, error: OSError) -> Exception:
    """The typed error for what the storage said; a local OSError is left as it is, but for a
    full disk."""
    if not is_remote(where):
        return DiskFullError(where, None, free_bytes(where)) if is_disk_full(error) else error
    text = str(error)
    bucket = urlsplit(where).netloc
    if "NO_SUCH_BUCKET" in text or "bucket does not exist" in text or _no_bucket(text, bucket):
        return BucketNotFoundError(where, bucket)
    denied = ("ACCESS_DENIED", "INVALID_ACCESS_KEY", "SIGNATURE_DOES_NOT_MATCH", "HTTP 403")
    if isinstance(error, PermissionError) or any(m in text for m in denied) or "403" in text:
        return StorageAccessDeniedError(where, _last_clause(text))
    if "NETWORK_CONNECTION" in text or "curlCode" in text or "Could not connect" in text:
        return StorageUnreachableError(where, _last_clause(text))
    return StorageError(f"{where}: {text}")


def _no_bucket(text: str, bucket: str) -> bool:
    return f"Bucket '{bucket}' not found" in text


def _last_clause(text: str) -> str:
    """The storage's own reason, without the request ids around it."""
    reason = text.split("operation: ", 1)[-1]
    return reason.split(" (Request ID", 1)[0].split("; Details", 1)[0].strip()


def ray_storage(where: str) -> dict[str, Any]:
    """Ray Train's ``RunConfig`` storage arguments for the location ``where``: checkpoints go
    where the run dir is, so they survive the loss of any node when it is an object store."""
    if not is_remote(where):
        return {"storage_path": location(where)}
    fs, path = filesystem(where)
    return {"storage_path": path, "storage_filesystem": fs}
