"""A whole copy of a file registry for the length of a transaction. Feast rewrites its file
registry in place, so a write cut short (a full disk, a kill) leaves bytes that no longer
decode, which the journal's object-by-object record cannot undo.

    registry_file(repo, config)  -> the local file of a file registry, or None
    keep(repo, path)             -> the registry's bytes copied into the repo, room checked first
    put_back(repo, path)         -> the registry file exactly as copied, in one rename
    as_copied(repo, path)        -> whether the registry holds the copy's bytes
    repair(repo, path)           -> put back a registry that no longer decodes (before Feast
                                    reads it), when an unfinished transaction kept a copy
    check_room(path, size)       -> RegistryDiskFullError when ``size`` bytes cannot fit there
    check_written(path, size)    -> RegistryDiskFullError when the file is not the whole write

Only a local file registry is copied: a SQL registry writes in its own transactions (the
journal's objects roll it back), a remote one (s3://, gs://) is replaced whole by its store.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from cae_ray.artifacts import write_bytes
from cae_ray.feast import import_feast
from cae_ray.feast.errors import RegistryDiskFullError

logger = logging.getLogger(__name__)

COPY = ".cae_ray_registry.copy"
"""The copy's name in the repo, beside the journal (it goes with the journal)."""
SLACK = 64 * 1024
"""Room kept beyond the bytes themselves: file-system blocks, the rename's temporary file."""


def registry_file(repo: Path, config: Any) -> Path | None:
    """The local file of a file registry (``config``: feature_store.yaml's ``registry``), or
    None for a SQL or remote registry."""
    path = str(config.path)
    if config.registry_type == "sql" or "://" in path:
        return None
    local = Path(path)
    return local if local.is_absolute() else repo / local


def keep(repo: Path, path: Path) -> None:
    """Copy the registry ``path`` into the repo, durably, after checking that there is room."""
    data = path.read_bytes()
    check_room(repo / COPY, len(data))
    write_bytes(repo / COPY, data)


def put_back(repo: Path, path: Path) -> bool:
    """The registry ``path`` as :func:`keep` copied it, in one rename (unless it holds those
    bytes already); False without a copy."""
    copy = repo / COPY
    if not copy.exists():
        return False
    data = copy.read_bytes()
    if not path.exists() or path.read_bytes() != data:
        write_bytes(path, data)
    return True


def as_copied(repo: Path, path: Path | None) -> bool:
    """Whether the file registry ``path`` holds exactly the bytes of the copy."""
    copy = repo / COPY
    if path is None or not copy.exists() or not path.exists():
        return False
    return path.read_bytes() == copy.read_bytes()


def forget(repo: Path) -> None:
    (repo / COPY).unlink(missing_ok=True)


def repair(repo: Path, path: Path) -> bool:
    """Put the copy back when the registry ``path`` no longer decodes (a write cut short):
    Feast could not even open the store otherwise. True when it did."""
    if decodes(path) or not (repo / COPY).exists():
        return False
    put_back(repo, path)
    logger.warning("%s did not decode (a write was cut short): put back from %s", path, COPY)
    return True


def decodes(path: Path) -> bool:
    import_feast()  # keeps our warning filters
    from feast.protos.feast.core.Registry_pb2 import Registry

    try:
        Registry().ParseFromString(path.read_bytes())
    except Exception:  # protobuf's DecodeError (of whichever protobuf Feast brings), OSError
        return False
    return True


def check_room(path: Path, size: int) -> None:
    """Refuse, before writing, ``size`` bytes at ``path`` that its disk cannot hold (the file
    it replaces counts as free space: it is rewritten, not added to)."""
    free = shutil.disk_usage(path.parent).free + (path.stat().st_size if path.exists() else 0)
    if size + SLACK > free:
        raise RegistryDiskFullError(str(path), size + SLACK, free)


def check_written(path: Path, size: int) -> None:
    """The registry file holds all ``size`` bytes written: a full disk can cut an unbuffered
    write short without an error (it returns the bytes it managed)."""
    if not path.exists() or path.stat().st_size != size:
        raise RegistryDiskFullError(str(path), size + SLACK, shutil.disk_usage(path.parent).free)
