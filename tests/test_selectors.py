from __future__ import annotations

import itertools

import pytest
import torch

from cae_ray.config import SelectorConfig
from cae_ray.selector.concrete import (
    ConcreteSelector,
    IndirectConcreteSelector,
    TemperatureSchedule,
    build_selector,
    distinct_selection,
    feature_scores,
)


def test_temperature_anneals_exponentially_from_start_to_end() -> None:
    schedule = TemperatureSchedule(10.0, 0.01, total_steps=101)
    assert schedule.temperature_at(0) == pytest.approx(10.0)
    assert schedule.temperature_at(50) == pytest.approx((10.0 * 0.01) ** 0.5)
    assert schedule.temperature_at(100) == pytest.approx(0.01)
    assert schedule.temperature_at(500) == pytest.approx(0.01)  # past the end: stays there
    values = [schedule.temperature_at(s) for s in range(101)]
    assert all(a > b for a, b in itertools.pairwise(values))


def test_distinct_selection_without_duplicates_is_the_argmax() -> None:
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    result = distinct_selection(probs)
    assert result.indices.tolist() == [1, 0]
    assert result.collisions == 0


def test_duplicates_go_to_the_most_confident_row() -> None:
    # Rows 0 and 2 both prefer feature 1; row 2 is more confident, so row 0 takes its next best.
    probs = torch.tensor(
        [[0.2, 0.5, 0.3, 0.0], [0.0, 0.1, 0.0, 0.9], [0.1, 0.8, 0.05, 0.05]],
    )
    result = distinct_selection(probs)
    assert result.indices.tolist() == [2, 3, 1]
    assert result.collisions == 1


def test_a_row_that_gave_way_never_takes_another_rows_uncontested_feature() -> None:
    # Row 1 wins feature 0 from row 0. Row 0's next best is feature 1, but feature 1 is row 2's
    # choice, which nobody contests (row 2 is just less sure): row 0 takes feature 2 instead.
    probs = torch.tensor(
        [[0.90, 0.08, 0.02, 0.0], [0.95, 0.0, 0.0, 0.05], [0.0, 0.6, 0.1, 0.3]],
    )
    result = distinct_selection(probs)
    assert result.indices.tolist() == [2, 0, 1]
    assert result.collisions == 1


def test_all_rows_on_one_feature_still_give_k_distinct_deterministically() -> None:
    probs = torch.softmax(torch.zeros(6, 10), dim=-1)  # perfect tie everywhere
    probs[:, 4] += 1.0
    first, second = distinct_selection(probs), distinct_selection(probs.clone())
    assert len(set(first.indices.tolist())) == 6
    assert first.collisions == 5
    assert torch.equal(first.indices, second.indices)


def test_random_logits_always_give_k_distinct() -> None:
    generator = torch.Generator().manual_seed(0)
    for k, n in [(1, 2), (5, 6), (20, 25), (50, 784)]:
        logits = 3 * torch.randn(k, n, generator=generator)
        logits[:, 0] += 10  # force collisions
        indices = distinct_selection(torch.softmax(logits, -1)).indices
        assert len(set(indices.tolist())) == k


@pytest.mark.parametrize("method", ["cae", "ipcae"])
@pytest.mark.parametrize("sampling", ["shared", "per_example", "chunked"])
def test_forward_shapes_and_modes(method: str, sampling: str) -> None:
    torch.manual_seed(0)
    selector = build_selector(SelectorConfig(method=method, sampling=sampling), 12, rows=4)
    x = torch.randn(8, 12)
    selector.train()
    mixed = selector(x, temperature=0.5)
    assert mixed.shape == (8, 4)
    mixed.sum().backward()
    assert all(p.grad is not None for p in selector.parameters())
    selector.eval()
    picked = selector(x)
    indices = selector.selected_indices()
    assert torch.equal(picked, x[:, indices])  # inference uses exactly one feature per row


def test_low_temperature_sample_is_nearly_one_hot() -> None:
    torch.manual_seed(0)
    selector = ConcreteSelector(5, 2)
    x = torch.eye(5)  # output row j = weight of feature j
    weights = selector(x, temperature=1e-3).T
    assert torch.allclose(weights.max(dim=-1).values, torch.ones(2), atol=1e-3)


def test_ip_logits_are_psi_times_w_plus_b() -> None:
    selector = IndirectConcreteSelector(30, 5, dim_ip=8)
    psi, layer = selector.ip_vectors, selector.feature_map
    expected = psi @ layer.weight.T + layer.bias
    assert selector.logits().shape == (5, 30)
    assert torch.allclose(selector.logits(), expected)
    assert IndirectConcreteSelector(30, 5).dim_ip == 30  # default d = N up to 2,048 features


def test_state_and_scores() -> None:
    selector = ConcreteSelector(4, 2)
    with torch.no_grad():
        selector.selection_logits.copy_(torch.tensor([[20.0, 0, 0, 0], [20.0, 0, 0, 0]]))
    state = selector.state()
    assert state.mean_max > 0.99 and state.distinct == 1
    scores = feature_scores(selector.probabilities())
    assert scores.shape == (4,) and int(scores.argmax()) == 0


def test_the_selector_learning_rate_is_a_ratio_of_the_heads() -> None:
    from cae_ray.config import validate_config
    from cae_ray.selector.model import build_model, build_optimizer

    def rates(selector: dict[str, object], task: str) -> tuple[float, float]:
        config = validate_config({"selector": {"k": 3, **selector}})
        model = build_model(config, 20, task, 20 if task == "reconstruction" else 2)  # type: ignore[arg-type]
        groups = build_optimizer(model, config, task).param_groups  # type: ignore[arg-type]
        return groups[0]["lr"], groups[1]["lr"]

    assert rates({}, "classification") == pytest.approx((1e-3, 1e-3))
    assert rates({"learning_rate_ratio": 0.3}, "classification") == pytest.approx((3e-4, 1e-3))
    assert rates({"learning_rate_ratio": 2.0}, "reconstruction") == pytest.approx((2e-3, 1e-3))
    with pytest.raises(ValueError, match="learning_rate_ratio"):
        validate_config({"selector": {"learning_rate_ratio": 0}})
