"""Errors of the Ray cluster: unreachable, short of what was asked, workers lost, a checkpoint
that holds more than data."""

from __future__ import annotations

from cae_ray.errors import EXIT_CLUSTER, EXIT_CONFIG, CaeRayError


class RayUnreachableError(CaeRayError):
    exit_code = EXIT_CLUSTER

    def __init__(
        self, address: str, reason: str, source: str = "scaling.address / RAY_ADDRESS"
    ) -> None:
        self.address, self.reason = address, reason
        super().__init__(
            f"cannot connect to the Ray cluster at {address!r} ({reason}). Fix: check "
            f"{source}, or unset it to start a local cluster."
        )


class GpuUnavailableError(CaeRayError):
    exit_code = EXIT_CLUSTER

    def __init__(self, wanted: float, available: float) -> None:
        super().__init__(
            f"scaling.use_gpu asks for {wanted:g} GPU(s) but the Ray cluster has "
            f"{available:g}. Fix: set scaling.use_gpu: false, lower scaling.num_workers, or "
            "add GPU nodes."
        )


class WorkersLostError(CaeRayError):
    """Training failed more often than ``scaling.max_failures`` allows (a node died and did not
    come back, workers were killed for memory, ...)."""

    exit_code = EXIT_CLUSTER

    def __init__(self, training: str, max_failures: int, reason: str, checkpoint: str | None):
        self.training, self.checkpoint = training, checkpoint
        resume = (
            f"the last checkpoint is {checkpoint}: run the same command with the same config and "
            "run dir to resume from it"
            if checkpoint
            else "no checkpoint was written yet: running again starts from the first epoch"
        )
        super().__init__(
            f"training {training} failed after {max_failures} retries "
            f"(scaling.max_failures) ({reason}). Fix: bring the cluster's workers back (or "
            f"raise scaling.max_failures); {resume}."
        )


class CheckpointRejectedError(CaeRayError):
    """A checkpoint in the run dir holds more than tensors and plain data."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"refusing to load the checkpoint {path}: {reason}. cae-ray loads tensors and plain "
            "data only (never code from a run dir). Fix: delete that checkpoint directory (the "
            "step then trains from the start), and find out who wrote it."
        )
