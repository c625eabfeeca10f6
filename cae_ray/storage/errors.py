"""Failures of the run dir's storage (a local disk or an object store), one class each; every
message names the location and the fix, and never a credential."""

from __future__ import annotations

import os

from cae_ray.errors import EXIT_CLUSTER, EXIT_CONFIG, CaeRayError


class StorageError(CaeRayError):
    """The storage behind a path or URI refused or failed an operation."""

    exit_code = EXIT_CONFIG


class StorageSchemeError(StorageError):
    """No filesystem is installed for a URI's scheme."""

    def __init__(self, uri: str, scheme: str, install: str | None) -> None:
        self.uri, self.scheme = uri, scheme
        fix = (
            f"{install}, or use a scheme pyarrow reads itself (s3://, gs://, abfs://, file://)"
            if install
            else "use s3:// (with AWS_ENDPOINT_URL for an S3-compatible store), gs://, abfs:// "
            "or a local path"
        )
        super().__init__(f"no filesystem for {scheme}:// (in {uri}). Fix: {fix}.")


class BucketNotFoundError(StorageError):
    """The bucket (or container) of a URI does not exist."""

    def __init__(self, uri: str, bucket: str) -> None:
        self.uri, self.bucket = uri, bucket
        super().__init__(
            f"the bucket {bucket!r} of {uri} does not exist{_endpoint()}. Fix: create it "
            "(e.g. `aws s3 mb`), or point run_dir at a bucket that exists."
        )


class StorageAccessDeniedError(StorageError):
    """The credentials in the environment may not read or write the location."""

    def __init__(self, uri: str, detail: str) -> None:
        self.uri = uri
        super().__init__(
            f"access to {uri} was denied{_endpoint()} ({detail}). Fix: give the run the "
            "credentials of a user or role that may read and write it (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the node's role)."
        )


class StorageUnreachableError(StorageError):
    """The storage endpoint did not answer."""

    exit_code = EXIT_CLUSTER

    def __init__(self, uri: str, detail: str) -> None:
        self.uri = uri
        super().__init__(
            f"could not reach the storage of {uri}{_endpoint()} ({detail}). Fix: check the "
            "network and the endpoint (AWS_ENDPOINT_URL for an S3-compatible store)."
        )


class DiskFullError(StorageError):
    """The disk of a file cae-ray writes (an export part, a packed split, a record, the run
    dir's lock) ran out of room: what was cut short is removed, none stays under its name."""

    def __init__(
        self, path: str, needed: int | None, free: int | None, what: str = "writing it"
    ) -> None:
        self.path, self.needed, self.free, self.what = path, needed, free, what
        room = f"it has {free:,} bytes free" if free is not None else "it is full"
        need = f" and {what} needs up to {needed:,}" if needed else ""
        short = needed - free if needed and free is not None and needed > free else None
        amount = f"at least {short:,} bytes" if short else "space"
        super().__init__(
            f"no space left on the disk holding {path}: {room}{need}. What was cut short was "
            f"removed: no partial file stays under its name. Fix: free {amount} on that disk "
            "(or use one with more room), then run the same command again."
        )


def _endpoint() -> str:
    """The endpoint override in use, which is not a secret and is often the mistake."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return f" at {endpoint}" if endpoint else ""
