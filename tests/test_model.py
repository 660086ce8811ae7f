import itertools
import math

import pytest
import torch
from torch import nn

from fcn_sweep.config import ACTIVATIONS, INITS, OPTIMIZERS, SCHEDULES, RunConfig
from fcn_sweep.model import ACTIVATIONS as ACT_TABLE
from fcn_sweep.model import INITS as INIT_TABLE
from fcn_sweep.model import Dropout, build_fcn, load_model, param_count, save_model, use_generator
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
    expected = sum(a * b + b for a, b in itertools.pairwise(widths)) + (2 * sum(hidden) if batch_norm else 0)
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


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_dropout_drops_at_its_rate_keeps_the_mean_and_follows_its_generator(p):
    layer = use_generator(nn.Sequential(Dropout(p)), torch.Generator().manual_seed(0))
    x = torch.ones(200, 1000)
    out = layer(x)
    assert (out == 0).float().mean().item() == pytest.approx(p, abs=0.005)
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)
    kept = out[out != 0]
    assert kept.min().item() == kept.max().item() == pytest.approx(1 / (1 - p), rel=1e-4)
    again = use_generator(nn.Sequential(Dropout(p)), torch.Generator().manual_seed(0))
    assert torch.equal(again(x), out) and not torch.equal(layer(x), out)
    assert torch.equal(layer.eval()(x), x)
