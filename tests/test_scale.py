"""Wide tables: the automatic IP rank, chunked sampling, the memory estimate and its refusal,
and a 64,000-feature training run under 8 GB."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cae_ray.config import validate_config
from cae_ray.selector import concrete as selectors
from cae_ray.selector.concrete import (
    IndirectConcreteSelector,
    auto_dim_ip,
    build_selector,
    mix_chunked,
    mix_per_example,
)
from cae_ray.selector.errors import MemoryBudgetError
from cae_ray.selector.estimator import ConcreteFeatureSelector
from cae_ray.selector.memory import check_memory, estimate_memory

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (its own peak memory); it prints one JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- automatic dim_ip ----------------------------------------------------------------------------


def test_auto_dim_ip_is_full_rank_up_to_2048_features_then_256() -> None:
    assert auto_dim_ip(784) == 784  # MNIST keeps the paper's d = N
    assert auto_dim_ip(2048) == 2048
    assert auto_dim_ip(2049) == 256
    assert auto_dim_ip(64_000) == 256
    assert IndirectConcreteSelector(3000, 5).dim_ip == 256
    assert IndirectConcreteSelector(3000, 5, dim_ip=3000).dim_ip == 3000  # full rank on request
    config = validate_config({"selector": {"k": 5}})
    assert config.selector.dim_ip is None
    selector = build_selector(config.selector, 5000, config.selector.fixed_k)
    assert isinstance(selector, IndirectConcreteSelector) and selector.dim_ip == 256


# --- chunked sampling ----------------------------------------------------------------------------


def test_chunked_sampling_equals_per_example_under_the_same_seed() -> None:
    torch.manual_seed(0)  # the inputs too: not whatever the tests before left in the RNG
    logits = torch.randn(6, 50, requires_grad=True)
    x = torch.randn(23, 50, requires_grad=True)
    results: list[tuple[torch.Tensor, ...]] = []
    for mix in (mix_per_example, lambda lg, xx, t: mix_chunked(lg, xx, t, rows=4)):
        logits.grad = x.grad = None
        torch.manual_seed(3)
        out = mix(logits, x, 0.3)
        (out.square() * torch.arange(6.0)).sum().backward()
        after = torch.rand(1)  # both consumed the same random numbers
        assert logits.grad is not None and x.grad is not None
        results.append((out.detach(), logits.grad.clone(), x.grad.clone(), after))
    (out_a, gl_a, gx_a, rng_a), (out_b, gl_b, gx_b, rng_b) = results
    assert out_b.shape == (23, 6)
    torch.testing.assert_close(out_b, out_a)
    # The gradients are sums in another order (per chunk, then over chunks): float32 rounding.
    torch.testing.assert_close(gl_b, gl_a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gx_b, gx_a, rtol=1e-4, atol=1e-4)
    assert torch.equal(rng_a, rng_b)


def test_chunked_selector_draws_a_different_sample_per_row(monkeypatch) -> None:
    monkeypatch.setattr(selectors, "CHUNK_VALUES", 3 * 4 * 10)  # 3 rows per chunk
    torch.manual_seed(0)
    selector = build_selector(
        validate_config({"selector": {"sampling": "chunked"}}).selector, 10, rows=4
    )
    x = torch.ones(8, 1) * torch.eye(10)[0]  # every row is feature 0: u = weight of feature 0
    weights = selector(x, temperature=1.0)
    assert weights.shape == (8, 4)
    assert len({tuple(row.tolist()) for row in weights}) == 8  # per-example, not shared
    assert bool(((weights > 0) & (weights < 1)).all())


# --- memory estimate and refusal -----------------------------------------------------------------

MEASURE = """
    import json, torch
    from pathlib import Path
    from cae_ray.config import validate_config
    from cae_ray.selector.model import build_model, build_optimizer, task_loss
    from cae_ray.selector.memory import estimate_memory

    def status(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    def train(n, config, steps):
        model = build_model(config, n, "reconstruction", n)
        optimizer = build_optimizer(model, config, "reconstruction")
        for _ in range(steps):
            loss = task_loss("reconstruction", model(x[:, :n], 1.0), x[:, :n], None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    torch.set_num_threads(1)
    config = validate_config({{"selector": {{"k": 100, "dim_ip": {d}, "sampling": "{sampling}"}}}})
    x = torch.randn(128, {n})
    train(300, validate_config({{"selector": {{"k": 10, "sampling": "{sampling}"}}}}), 2)  # warm
    before = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    train({n}, config, 3)
    estimate = estimate_memory(config, {n}, "reconstruction", {n}).total
    print(json.dumps({{"measured": status("VmHWM") - before, "estimate": estimate}}))
"""


@pytest.mark.parametrize(
    ("n", "d", "sampling"),
    [(4000, 4000, "shared"), (2000, 2000, "per_example"), (8000, 256, "chunked")],
)
def test_memory_estimate_matches_the_measured_peak(n: int, d: int, sampling: str) -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset the peak RSS")
    result = run_python(MEASURE.format(n=n, d=d, sampling=sampling))
    ratio = result["measured"] / result["estimate"]
    assert 0.6 < ratio < 1.5, result


def test_refusal_names_the_estimate_the_limit_and_the_setting() -> None:
    full_rank = validate_config(
        {"selector": {"k": 100, "dim_ip": 64_000}, "training": {"memory_limit_gb": 8}}
    )
    with pytest.raises(MemoryBudgetError) as refused:
        check_memory(full_rank, 64_000, "reconstruction", 64_000)
    message = str(refused.value)
    assert refused.value.setting == "selector.dim_ip"
    # W alone is 64,000^2 floats, 16.4 GB; with its gradient and Adam's state, five times that.
    needed = estimate_memory(full_rank, 64_000, "reconstruction", 64_000).total
    assert 80e9 < needed < 85e9
    assert f"needs an estimated {needed / 1e9:.2f} GB" in message
    assert "limit of 8.00 GB (training.memory_limit_gb)" in message
    assert f"selector.dim_ip: {refused.value.value}" in message
    fixed = full_rank.model_copy(
        update={
            "selector": full_rank.selector.model_copy(update={"dim_ip": int(refused.value.value)})
        }
    )
    assert estimate_memory(fixed, 64_000, "reconstruction", 64_000).total <= 8e9

    per_example = validate_config(
        {"selector": {"k": 100, "sampling": "per_example"}, "training": {"memory_limit_gb": 2}}
    )
    with pytest.raises(MemoryBudgetError, match=r"selector\.sampling: chunked"):
        check_memory(per_example, 20_000, "reconstruction", 20_000)

    big_batch = validate_config({"training": {"batch_size": 65_536, "memory_limit_gb": 2}})
    with pytest.raises(MemoryBudgetError, match=r"training\.batch_size: "):
        check_memory(big_batch, 5_000, "reconstruction", 5_000)


def test_the_estimator_refuses_before_allocating() -> None:
    X = np.random.default_rng(0).normal(size=(20, 50)).astype(np.float32)
    # In the estimator's terms: its parameter dim_ip, not the config key selector.dim_ip.
    with pytest.raises(MemoryBudgetError, match=r"set dim_ip: "):
        ConcreteFeatureSelector(k=3, dim_ip=10**9, epochs=1).fit(X)


# --- 64,000 features -----------------------------------------------------------------------------


def test_64000_features_train_low_rank_under_8_gb() -> None:
    result = run_python(
        """
        import json, resource, numpy as np, torch
        from cae_ray.selector.estimator import ConcreteFeatureSelector
        torch.set_num_threads(1)
        X = np.random.default_rng(0).standard_normal((384, 64_000), dtype=np.float32)
        selector = ConcreteFeatureSelector(k=100, epochs=1, batch_size=128, early_stop=False)
        import warnings; warnings.simplefilter("ignore")
        selector.fit(X)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"peak": peak, "d": selector.model_.selector.dim_ip,
                          "steps": selector.history_[-1]["step"],
                          "selected": len(set(selector.selected_indices_.tolist()))}))
        """
    )
    assert result["d"] == 256 and result["steps"] == 3 and result["selected"] == 100
    assert result["peak"] < 8e9, f"peak RSS {result['peak'] / 1e9:.2f} GB"


def test_supervised_search_widens_above_2048_features() -> None:
    from cae_ray.selector.model import search_rows

    config = validate_config({"selector": {"k": 20}})
    assert config.selector.search_factor is None
    assert search_rows(config, 784, "classification") == 40  # MNIST keeps 2k
    assert search_rows(config, 20_000, "classification") == 80
    assert search_rows(config, 20_000, "reconstruction") == 20
    explicit = validate_config({"selector": {"k": 20, "search_factor": 1.5}})
    assert search_rows(explicit, 20_000, "classification") == 30
