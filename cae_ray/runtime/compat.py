"""What differs between the Ray releases cae-ray admits (``ray>=2.51,<3``), in one place.

Code elsewhere calls these functions instead of the Ray API they wrap, so no version check
appears anywhere else. Each shim names the releases that need it; when the floor passes them,
the shim goes. The tested range itself is declared in :mod:`cae_ray.versions`.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

# The file types `read_parquet` reads. Ray 2.52 made this its default (ray-project/ray#56481);
# Ray 2.51 read every file of a folder, the export's `_manifest.json` included, and failed on it.
PARQUET_EXTENSIONS = ["parquet"]


def read_parquet(location: str, filesystem: Any) -> Any:
    """``ray.data.read_parquet`` of the Parquet files under ``location``, and nothing else there."""
    import ray.data

    return ray.data.read_parquet(
        location, filesystem=filesystem, file_extensions=PARQUET_EXTENSIONS
    )


def worker_failures(error: BaseException) -> list[BaseException]:
    """The exceptions the workers of a failed training raised (``WorkerGroupError``), as raised.
    Ray passes them on as they are since ray-project/ray#61153 (2026-02); before, each came
    wrapped in a ``UserExceptionWithTraceback`` that holds it as ``_base_exc`` (Ray 2.51)."""
    failures = getattr(error, "worker_failures", None) or {}
    return [getattr(failure, "_base_exc", failure) for failure in failures.values()]


# Notices older Ray releases print on every run that ask nothing of cae-ray's users; the CLI
# drops them (`cae-ray -v` keeps everything).
# - At each ray.init(), from 2.50 until ray-project/ray#62492 (2026-04) made it the default:
#   "a future Ray will stop overriding CUDA_VISIBLE_DEVICES for tasks without GPUs".
_FUTURE_GPU_DEFAULT = "Tip: In future versions of Ray, Ray will no longer override accelerator"
# - Ray Data 2.51 logs, once per process, that its object store is under half of the memory:
#   a sizing hint for clusters, wrong for a local run that shares the machine (dropped later).
_OBJECT_STORE_HINT = "object store is configured to use only"
_RESOURCE_LOGGER = "ray.data._internal.execution.resource_manager"


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_old_notices() -> None:
    """Drop the notices above, process-wide (the CLI calls this; a library never does)."""
    warnings.filterwarnings("ignore", _FUTURE_GPU_DEFAULT, FutureWarning)
    resource_logger = logging.getLogger(_RESOURCE_LOGGER)
    if not any(isinstance(f, _DropMessage) for f in resource_logger.filters):
        resource_logger.addFilter(_DropMessage(_OBJECT_STORE_HINT))
