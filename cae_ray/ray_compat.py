"""What differs between the Ray releases cae-ray admits (``ray>=2.51,<3``), in one place.

Code elsewhere calls these functions instead of the Ray API they wrap, so no version check
appears anywhere else. Each shim names the releases that need it; when the floor passes them,
the shim goes. The tested range itself is declared in :mod:`cae_ray.versions`.
"""

from __future__ import annotations

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
