import json

import pytest

from fcn_sweep.config import ACTIVATIONS, INITS, OPTIMIZERS, ConfigError, RunConfig, parse_overrides


def test_defaults_are_a_valid_config():
    cfg = RunConfig()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("text", ["1024,256", "[1024, 256]", "1024 256", "(1024, 256)"])
def test_hidden_accepts_the_forms_users_and_wandb_write(text):
    assert RunConfig.from_args([f"--hidden={text}"]).hidden == (1024, 256)


def test_hidden_from_a_yaml_list_and_a_single_width():
    assert RunConfig.from_dict({"hidden": [512, 128, 64]}).hidden == (512, 128, 64)
    assert RunConfig.from_dict({"hidden": 300}).hidden == (300,)


def test_wandb_agent_argument_forms():
    # `wandb agent` formats values with str(): booleans as True/False, lists as Python lists.
    cfg = RunConfig.from_args(["--batch_norm=True", "--hidden=[1024, 128]", "--lr=0.0001", "--epochs=40"])
    assert cfg.batch_norm is True and cfg.hidden == (1024, 128) and cfg.lr == 1e-4 and cfg.epochs == 40


def test_space_separated_overrides_and_dashes_in_keys():
    cfg = RunConfig.from_args(["--batch-size", "128", "--optimizer", "SGD"])
    assert cfg.batch_size == 128 and cfg.optimizer == "sgd"


def test_integral_floats_are_ints_but_fractions_are_not():
    assert RunConfig.from_dict({"epochs": 30.0}).epochs == 30
    with pytest.raises(ConfigError, match="epochs"):
        RunConfig.from_dict({"epochs": 30.5})


def test_dropout_one_rate_or_one_per_layer():
    assert RunConfig.from_args(["--dropout=0.3"]).dropout_rates() == (0.3, 0.3)
    cfg = RunConfig.from_args(["--hidden=1024,256,64", "--dropout=0.5,0.3,0.1"])
    assert cfg.dropout_rates() == (0.5, 0.3, 0.1)
    with pytest.raises(ConfigError, match="3 rates for 2 hidden layers"):
        RunConfig.from_args(["--dropout=0.5,0.3,0.1"])


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("--optimizer=lbfgs", ["optimizer", *OPTIMIZERS]),
        ("--init=orthogonal", ["init", *INITS]),
        ("--activation=swish", ["activation", *ACTIVATIONS]),
        ("--lr=-0.1", ["lr", "> 0"]),
        ("--lr=abc", ["lr", "'abc'"]),
        ("--dropout=1.0", ["dropout", "[0, 1)"]),
        ("--momentum=1", ["momentum", "[0, 1)"]),
        ("--batch_norm=maybe", ["batch_norm", "true or false"]),
        ("--hidden=0,10", ["hidden"]),
        ("--epochs=0", ["epochs", "positive"]),
        ("--lr=nan", ["lr"]),
        ("--matmul_precision=medium", ["matmul_precision", "highest", "high"]),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override, names):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_args([override])
    message = str(err.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_unknown_key_is_rejected_with_the_known_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rate'.*\blr\b"):
        RunConfig.from_dict({"learning_rate": 0.1})


def test_malformed_override_syntax():
    with pytest.raises(ConfigError, match="--key=value"):
        parse_overrides(["epochs=3"])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_overrides(["--epochs"])


def test_file_then_overrides(tmp_path):
    (tmp_path / "exp.yaml").write_text("epochs: 7\nhidden: [128, 64]\noptimizer: rmsprop\nlr: 1.0e-4\n")
    cfg = RunConfig.from_args(["--epochs=9"], RunConfig.from_file(tmp_path / "exp.yaml"))
    assert (cfg.epochs, cfg.hidden, cfg.optimizer, cfg.lr) == (9, (128, 64), "rmsprop", 1e-4)


def test_a_run_directory_config_json_rebuilds_the_config(tmp_path):
    cfg = RunConfig(hidden=(512,), dropout=0.2, batch_norm=True, seed=3)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert RunConfig.from_file(tmp_path) == cfg
    assert RunConfig.from_file(tmp_path / "config.json") == cfg


@pytest.mark.parametrize(
    ("text", "match"),
    [("- 1\n- 2\n", "mapping"), ("epochs: [\n", "not valid YAML"), ("colour: red\n", "unknown key 'colour'")],
)
def test_bad_config_files(tmp_path, text, match):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_file(tmp_path / "bad.yaml")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        RunConfig.from_file(tmp_path / "nope.yaml")


def test_config_is_frozen_and_derives_scalar_companions():
    cfg = RunConfig(hidden=(1024, 256))
    with pytest.raises(AttributeError):
        cfg.lr = 0.1  # type: ignore[misc]
    assert (cfg.depth, cfg.arch) == (2, "1024-256")
