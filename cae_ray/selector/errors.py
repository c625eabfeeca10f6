"""Errors of training a selector (in memory or on Ray workers)."""

from __future__ import annotations

from cae_ray.errors import EXIT_CONFIG, CaeRayError


class DeviceUnavailableError(CaeRayError):
    def __init__(self, device: str) -> None:
        super().__init__(
            f"device={device!r} was asked for but torch sees no such device here. Fix: set "
            "device='cpu', or run on a machine with a CUDA build of torch and a GPU."
        )


class TrainingDivergedError(CaeRayError):
    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(
            f"the training loss became {loss} in epoch {epoch}. Fix: lower the learning rate, "
            "or scale the features (e.g. StandardScaler) so their values are of order 1."
        )


class MemoryBudgetError(CaeRayError):
    """Training would need more memory than the machine has free (or than allowed)."""

    exit_code = EXIT_CONFIG

    def __init__(
        self, estimate: str, limit: str, source: str, setting: str, value: str, fixed: str
    ) -> None:
        self.estimate, self.limit, self.setting, self.value = estimate, limit, setting, value
        if setting:
            fix = (
                f"set {setting}: {value} (estimated {fixed}), or raise training.memory_limit_gb "
                "if more memory is free than the OS reports"
            )
        else:
            fix = "lower selector.k, training.batch_size or the head's hidden widths"
        super().__init__(
            f"training needs an estimated {estimate}, more than the limit of {limit} "
            f"({source}). Fix: {fix}."
        )
