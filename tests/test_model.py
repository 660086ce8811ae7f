import itertools
import math

import pytest
import torch
from torch import nn

from fcn_sweep.config import ACTIVATIONS, INITS, OPTIMIZERS, SCHEDULES, RunConfig
from fcn_sweep.model import ACTIVATIONS as ACT_TABLE
from fcn_sweep.model import INITS as INIT_TABLE
from fcn_sweep.model import build_fcn, load_model, param_count, save_model
from fcn_sweep.optim import GROUPS, UPDATES
from fcn_sweep.optim import SCHEDULES as SCHED_TABLE


def test_lookup_tables_cover_exactly_what_the_config_accepts():
    assert set(ACT_TABLE) == set(ACTIVATIONS)
    assert set(INIT_TABLE) == set(INITS)
    assert set(GROUPS) == set(UPDATES) == set(OPTIMIZERS)
    assert set(SCHED_TABLE) == set(SCHEDULES)


@pytest.mark.parametrize("hidden", [(1024, 256), (64,), (300, 200, 100, 50)])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_shapes_and_layers(hidden, batch_norm):
    cfg = RunConfig(hidden=hidden, batch_norm=batch_norm, dropout=0.2)
    model = build_fcn(cfg)
    assert model(torch.randn(5, 784)).shape == (5, 10)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [*hidden, 10]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model) == (len(hidden) if batch_norm else 0)
    assert sum(isinstance(m, nn.Dropout) for m in model) == len(hidden)
    widths = [784, *hidden, 10]
    # A Linear that feeds batch norm has no bias (batch norm cancels it); the norm has two per unit.
    expected = sum(a * b + b for a, b in itertools.pairwise(widths)) + (sum(hidden) if batch_norm else 0)
    assert [m.bias is None for m in linears] == [batch_norm] * len(hidden) + [False]
    assert param_count(model) == expected


def test_per_layer_dropout_and_zero_dropout():
    model = build_fcn(RunConfig(hidden=(64, 32), dropout=(0.5, 0.0)))
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.5]


def _std(fan_in, fan_out, init, cfg):
    return {
        "xavier_uniform": math.sqrt(2 / (fan_in + fan_out)),
        "xavier_normal": math.sqrt(2 / (fan_in + fan_out)),
        "kaiming_uniform": math.sqrt(2 / fan_in),
        "kaiming_normal": math.sqrt(2 / fan_in),
        "normal": cfg.init_std,
        "default": 1 / math.sqrt(3 * fan_in),  # PyTorch's kaiming_uniform with a=sqrt(5)
    }[init]


@pytest.mark.parametrize("init", INITS)
def test_each_init_gives_its_weight_statistics(init):
    torch.manual_seed(0)
    cfg = RunConfig(hidden=(1024, 256), init=init, init_std=0.5)
    model = build_fcn(cfg)
    for m in (m for m in model if isinstance(m, nn.Linear)):
        w = m.weight.detach()
        expected = _std(m.in_features, m.out_features, init, cfg)
        assert w.std().item() == pytest.approx(expected, rel=0.05), m
        assert abs(w.mean().item()) < 0.05 * expected + 1e-4
        if init != "default":
            assert torch.count_nonzero(m.bias) == 0


def test_kaiming_gain_follows_the_activation():
    torch.manual_seed(0)
    tanh = build_fcn(RunConfig(hidden=(1024,), init="kaiming_normal", activation="tanh"))[0].weight.std().item()
    assert tanh == pytest.approx((5 / 3) / math.sqrt(784), rel=0.05)


def test_saved_model_file_alone_rebuilds_the_network(tmp_path):
    cfg = RunConfig(hidden=(128, 64), batch_norm=True, dropout=0.1, activation="gelu")
    model = build_fcn(cfg).eval()
    save_model(tmp_path / "m.safetensors", model.state_dict(), cfg)
    loaded, loaded_cfg = load_model(tmp_path / "m.safetensors")
    x = torch.randn(8, 784)
    assert loaded_cfg == cfg
    torch.testing.assert_close(loaded(x), model(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_model_file_written_with_biases_before_batch_norm_loads_and_computes_the_same(tmp_path):
    """Files written before the Linear feeding batch norm lost its bias: the bias folds into the
    norm's running mean, and the loaded network computes what the old one did."""
    cfg = RunConfig(hidden=(64, 32), batch_norm=True, dropout=0.1)
    torch.manual_seed(0)
    old = nn.Sequential(
        nn.Linear(784, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(32, 10),
    )  # fmt: skip
    old.train()
    for _ in range(5):  # running statistics and biases away from their initial values
        old(torch.randn(128, 784) * 2 + 1)
    with torch.no_grad():
        for m in old:
            if isinstance(m, nn.Linear):
                m.bias.uniform_(-1, 1)
    old.eval()
    save_model(tmp_path / "old.safetensors", old.state_dict(), cfg)
    loaded, _ = load_model(tmp_path / "old.safetensors")
    x = torch.randn(256, 784)
    torch.testing.assert_close(loaded(x), old(x), rtol=1e-5, atol=1e-5)
