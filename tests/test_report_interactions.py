"""Two-way interactions on synthetic studies whose truth is known (no training): a planted interaction
is named with its sign and size, additive effects and interactions smaller than the seed noise are
not, an aliased pair and a pair with a missing cell are not estimable, three-level parameters and
binned continuous ones are handled, and what follows (the per-level ablation, the figure, the next
sweep) appears where a named interaction calls for it."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

import pytest
import yaml

from fcn_sweep.config import RunConfig
from fcn_sweep.report import build, interactions, load
from fcn_sweep.report import results as results_mod
from fcn_sweep.sweep.spec import load_sweep

from .conftest import REPO, cli, needs_data

BASE = {"epochs": 3, "hidden": [64], "optimizer": "adam", "lr": 1.0e-3}
INITS = ("kaiming_uniform", "normal", "xavier_uniform")  # display order: by name
NOISE = 0.002  # seed-to-seed standard deviation of best val acc in these studies


def write_run(root: Path, name: str, cfg: RunConfig, val: float) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    rows = [{"epoch": e, "train/loss": 1 / e, "train/acc": val - 0.03 / e, "val/loss": 1 / e, "val/acc": val - 0.03 / e,
             "test/loss": 1 / e, "test/acc": val - 0.01} for e in (1, 2, 3)]  # fmt: skip
    (d / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in rows))
    summary = {"status": "finished", "best_epoch": 3, "best_val_acc": val, "test_acc_at_best": val - 0.01,
               "params": 100}  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))


def study(root: Path, score, params: dict[str, list], seeds: int = 3, noise: float = NOISE, skip=()) -> Path:
    """Every combination of `params` (minus `skip`), `seeds` runs each, scored by score(config) plus
    Gaussian seed noise."""
    rng = random.Random(7)
    k = 0
    for combo in itertools.product(*params.values()):
        values = dict(zip(params, combo, strict=True))
        if tuple(combo) in skip:
            continue
        for seed in range(seeds):
            cfg = RunConfig.from_dict({**BASE, **values, "seed": seed})
            write_run(root, f"run-{k:03d}", cfg, score(values) + rng.gauss(0, noise))
            k += 1
    return root


def init_bn(interaction: float, main: float = -0.02):
    """normal init costs `main` with batch norm and `main + interaction` without it; batch norm adds 0.01."""

    def score(v: dict) -> float:
        normal = v["init"] == "normal"
        return 0.88 + 0.01 * v["batch_norm"] + main * normal + interaction * normal * (not v["batch_norm"])

    return score


def analyse(root: Path) -> results_mod.Results:
    s = load(root)
    return results_mod.analyse(s, list(s.swept), [])


def find(res: results_mod.Results, *params: str) -> interactions.Interaction:
    return next(x for x in res.interactions if set(x.params) == set(params))


# --- the planted interaction ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """init x batch_norm x dropout crossed, three seeds: normal init costs 0.02 with batch norm and
    0.12 without (interaction 0.10); dropout does nothing and interacts with nothing."""
    root = tmp_path_factory.mktemp("planted")
    runs = study(
        root / "runs", init_bn(-0.10), {"init": list(INITS), "batch_norm": [True, False], "dropout": [0.1, 0.3]}
    )
    return root, build(runs, root / "report"), analyse(runs)


def test_a_planted_interaction_is_named_with_its_sign_and_size(planted):
    _, _, res = planted
    x = find(res, "init", "batch_norm")
    assert x.named and x.verdict == interactions.BEYOND
    assert x.params == ("init", "batch_norm")  # init matters more: its effect is described at batch_norm's levels
    assert x.axes[1].labels == ["false", "true"] and x.compared == 3  # 3 pairs of inits x 1 pair of bn levels
    c = x.contrast
    # normal against another init (the better one first), its effect at true minus that at false: +0.10
    assert x.axes[0].labels[c.a[1]] == "normal" and c.b == (0, 1)
    assert c.value == pytest.approx(0.10, abs=0.006)
    lo, hi = c.interval
    assert 0 < lo < c.value < hi and hi - lo < 0.02
    assert c.at[0] == pytest.approx(-0.12, abs=0.006) and c.at[1] == pytest.approx(-0.02, abs=0.006)
    # the table of config means: normal without batch norm is the odd cell
    normal, false = x.axes[0].labels.index("normal"), 0
    assert x.cells[normal][false].mean == pytest.approx(0.88 - 0.12, abs=0.004) and x.cells[normal][false].configs == 2
    # dropout does nothing: no claim about it with anything
    assert [y.params for y in res.named] == [("init", "batch_norm")]
    for y in res.interactions:
        if "dropout" in y.params:
            assert y.verdict == interactions.WITHIN


def test_the_summary_and_the_html_name_it_with_its_sizes_and_split_the_ablation(planted):
    _, rep, res = planted
    md, html = rep.summary.read_text(), rep.html.read_text()
    x = find(res, "init", "batch_norm")
    head = md.split("\n## ", 1)[0]
    m = re.search(r"\*\*The effect of init depends on batch_norm:\*\* normal vs (\w+) ([+-]\d\.\d{4}) at "
                  r"batch_norm=false, ([+-]\d\.\d{4}) at batch_norm=true \(interaction ([+-]\d\.\d{4}), 95% interval "
                  r"\[([+-]\d\.\d{4}), ([+-]\d\.\d{4})\]", head)  # fmt: skip
    assert m, head
    c = x.contrast
    assert float(m.group(2)) == pytest.approx(c.at[0], abs=1e-4) and c.at[0] == pytest.approx(-0.12, abs=0.006)
    assert float(m.group(3)) == pytest.approx(c.at[1], abs=1e-4)
    assert float(m.group(4)) == pytest.approx(x.contrast.value, abs=1e-4) and x.contrast.value > 0
    assert float(m.group(5)) < float(m.group(4)) < float(m.group(6))
    assert "the averaged ablation of init hides this" in head
    assert "depends on" in html.split("<section id='parallel'>", 1)[0]  # the HTML's summary says it too
    # the ablation of init: per level of batch_norm, not one averaged Δ
    line = next(s for s in md.splitlines() if s.startswith("- Ablation of init"))
    assert "at batch_norm=false:" in line and "at batch_norm=true:" in line
    # one figure per named interaction, in both documents
    assert (rep.out / "figures" / "interaction-init-batch_norm.png").is_file()
    assert "figures/interaction-init-batch_norm.png" in md and "Interaction: init × batch_norm" in html
    # every crossed pair listed with its verdict
    table = md.split("## Interactions", 1)[1].split("\n## ", 1)[0]
    assert table.count("| within noise |") == 2 and table.count("| beyond noise |") == 1


def test_the_next_sweep_crosses_a_named_interaction_seen_with_few_seeds(tmp_path):
    runs = study(tmp_path / "runs", init_bn(-0.10), {"init": list(INITS), "batch_norm": [True, False]}, seeds=2)
    rep = build(runs, tmp_path / "report")
    assert rep.next_sweep is not None
    p = load_sweep(rep.next_sweep)["parameters"]
    assert len(p["init"]["values"]) == 3 and p["batch_norm"] == {"values": [False, True]}
    assert len(p["seed"]["values"]) >= 3
    assert "cross init × batch_norm to size their interaction" in rep.summary.read_text()


def test_without_repeats_the_interval_comes_from_matched_settings(tmp_path):
    """One seed per config; dropout's three values give three matched settings of init x batch_norm,
    whose contrasts agree on the planted 0.10 within the noise."""
    params = {"init": ["kaiming_uniform", "normal"], "batch_norm": [True, False], "dropout": [0.1, 0.2, 0.3]}
    res = analyse(study(tmp_path / "runs", init_bn(-0.10), params, seeds=1))
    assert res.evidence.noise.source != "seeds"
    x = find(res, "init", "batch_norm")
    assert x.named and x.noise == "the spread over matched settings" and x.contrast.settings == 3
    assert x.contrast.value == pytest.approx(0.10, abs=0.008)


# --- no claim where there is none -----------------------------------------------------------------
@pytest.mark.parametrize("interaction", [0.0, 0.001])
def test_additive_effects_or_an_interaction_inside_the_noise_are_not_named(tmp_path, interaction):
    """0.001 is half the seed spread: three seeds cannot see it."""
    runs = study(tmp_path / "runs", init_bn(interaction), {"init": list(INITS), "batch_norm": [True, False]})
    res = analyse(runs)
    assert res.named == [] and find(res, "init", "batch_norm").verdict == interactions.WITHIN
    md = build(runs, tmp_path / "report").summary.read_text()
    assert "depends on" not in md and "interaction-" not in md
    assert "| within noise |" in md.split("## Interactions", 1)[1]


# --- what cannot be told --------------------------------------------------------------------------
def test_an_aliased_pair_is_not_estimable(tmp_path):
    """Each init with its own dropout: init and dropout are aliased, their interaction cannot be had."""
    rng = random.Random(3)
    drop = {"kaiming_uniform": 0.1, "normal": 0.2, "xavier_uniform": 0.3}
    for k, (init, bn, seed) in enumerate(itertools.product(INITS, (True, False), range(2))):
        cfg = RunConfig.from_dict({**BASE, "init": init, "batch_norm": bn, "dropout": drop[init], "seed": seed})
        write_run(
            tmp_path / "runs", f"r{k:02d}", cfg, init_bn(-0.1)({"init": init, "batch_norm": bn}) + rng.gauss(0, NOISE)
        )
    res = analyse(tmp_path / "runs")
    x = find(res, "init", "dropout")
    assert x.verdict == interactions.NOT_ESTIMABLE and "aliased" in x.why
    # init x batch_norm is confounded with dropout x batch_norm: no setting of dropout holds two inits
    y = find(res, "init", "batch_norm")
    assert y.verdict == interactions.NOT_ESTIMABLE and "dropout" in y.why


def test_three_level_parameters_and_a_missing_cell(tmp_path):
    """init (3) x dropout (3), normal at dropout 0.5 never run: contrasts that need that cell are not
    compared; the others still find normal x dropout 0.1 (its planted -0.05)."""

    def score(v):
        return 0.88 - 0.05 * (v["init"] == "normal" and v["dropout"] == 0.1)

    runs = study(tmp_path / "runs", score, {"init": list(INITS), "dropout": [0.1, 0.3, 0.5]}, skip={("normal", 0.5)})
    res = analyse(runs)
    x = find(res, "init", "dropout")
    assert x.compared == 9 - 4  # 3 x 3 sub-tables, less the 2 x 2 that need normal / 0.5
    assert x.named and abs(x.contrast.value) == pytest.approx(0.05, abs=0.006)
    cells = {(a, b): x.cells[ia][jb] for ia, a in enumerate(x.axes[0].labels) for jb, b in enumerate(x.axes[1].labels)}
    missing = [k for k, c in cells.items() if c.configs == 0]
    assert missing == [("normal", "0.5")] or missing == [("0.5", "normal")]
    # and the report says it, the missing cell shown as missing
    md = build(runs, tmp_path / "report").summary.read_text()
    assert re.search(r"\*\*The effect of (init|dropout) depends on (dropout|init):\*\*", md)
    assert re.search(r"^\| (normal|0\.5) \|.* – \|", md.split("## Interactions", 1)[1], re.M)


def test_a_pair_with_every_matched_setting_missing_a_cell_is_not_estimable(tmp_path):
    runs = study(tmp_path / "runs", init_bn(-0.1), {"init": ["kaiming_uniform", "normal"], "batch_norm": [True, False]},
                 skip={("normal", False)})  # fmt: skip
    x = find(analyse(runs), "init", "batch_norm")
    assert x.verdict == interactions.NOT_ESTIMABLE and "no config has normal / false" in x.why


def test_continuous_parameters_use_bins_and_too_few_runs_per_cell_is_said(tmp_path):
    """A random search: lr drawn log-uniform (binned), optimizer one of two. With 60 runs the cells hold
    about ten configs each (three lr bins); with 10 some hold fewer than three."""
    for n, verdicts in ((10, {interactions.TOO_FEW}), (60, {interactions.WITHIN, interactions.BEYOND})):
        rng = random.Random(n)
        root = tmp_path / f"runs-{n}"
        for k in range(n):
            lr, opt = 10 ** rng.uniform(-4, -1), rng.choice(["adam", "sgd"])
            cfg = RunConfig.from_dict({**BASE, "lr": lr, "optimizer": opt, "seed": k})
            write_run(root, f"r{k:02d}", cfg, 0.85 + 0.01 * (opt == "adam") + rng.gauss(0, NOISE))
        x = find(analyse(root), "lr", "optimizer")
        assert x.pooled and (x.axes[0].binned or x.axes[1].binned)
        assert x.verdict in verdicts, (n, x.verdict, x.why)
        if n == 10:
            assert "config" in x.why


# --- the init study, for real ---------------------------------------------------------------------
@pytest.mark.slow
@needs_data
def test_the_init_study_names_the_init_by_batch_norm_interaction(tmp_path):
    """sweeps/init-study.yaml as issue 20 ran it, 10 epochs and 2 seeds, on the first 4,096 training
    images (about 30 minutes on two busy cores): a plain normal init costs more without batch norm."""
    spec = yaml.safe_load((REPO / "sweeps" / "init-study.yaml").read_text())
    spec["parameters"] |= {"epochs": {"value": 10}, "subset": {"value": 4096}, "seed": {"values": [0, 1]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    r = cli("sweep", str(tmp_path / "sweep.yaml"), "--workers", "1", "--pack", "6", "--wandb", "disabled", "--quiet",
            "--out", str(tmp_path / "sweep"), cwd=tmp_path, timeout=3600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rep = build(tmp_path / "sweep")
    md = rep.summary.read_text()
    print(md)
    x = find(analyse(tmp_path / "sweep"), "init", "batch_norm")
    assert x.named and x.axes[0].labels[x.contrast.a[1]] == "normal"
    assert x.contrast.at[0] < x.contrast.at[1] < 0  # normal hurts, and more without batch norm (false comes first)
    assert "**The effect of init depends on batch_norm:** normal vs" in md
