"""The guides' commands, run as written: a doc whose command stops working fails CI.

Every ```bash and ```python block of README.md and docs/*.md is either run here (RUN) or named in
SKIP with the reason it cannot run on a test machine in seconds (a GPU, Docker, W&B's cloud, a
cluster, hours of training); a new block that is in neither fails the first test, so it gets
classified when it is written. Blocks are known by their first line, so a changed command is
classified again too.

A run happens in a fresh directory that holds what a checkout gives the guides: `sweeps/`, and
`.venv/bin/fcn-sweep` (this interpreter's fcn-sweep) also on PATH as `fcn-sweep`. Where a guide
writes a placeholder for what the reader has (DIR, a run's id), SUBSTITUTE says what stands in.
The blocks run in order, in one directory: the README's sweep feeds the report guide's reports.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, needs_data

GUIDES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# (guide, first line of the block) -> what of it is replaced before it runs (none: as written).
RUN: dict[tuple[str, str], dict[str, str]] = {
    # The venv the guide's setup makes is the one these tests run in.
    ("README.md", "scripts/setup.sh && .venv/bin/fcn-sweep sweep sweeps/smoke.yaml --workers 2"): {
        "scripts/setup.sh && ": ""
    },
    ("docs/report.md", ".venv/bin/fcn-sweep report sweeps-out/fcn-smoke"): {
        "report runs/": "report sweeps-out/fcn-smoke/runs/",
        "report DIR": "report sweeps-out/fcn-smoke",
        "3f9a2c,20261128-020315-c266c1": "{run_ids}",  # two of the smoke sweep's runs, as the reader has them
    },
    ("docs/speed.md", "from fcn_sweep import data as data_mod"): {},
}
SKIP = {
    ("README.md", "scripts/test.sh"): "the whole suite, of which this test is a part",
    ("docs/docker.md", "scripts/docker_build.sh -t fcn-sweep"): "Docker (tests/test_docker.py)",
    ("docs/docker.md", "docker run --rm --gpus all --network none"): "Docker and a GPU",
    ("docs/docker.md", "export WANDB_API_KEY=..."): "Docker, a GPU and W&B's cloud",
    ("docs/docker.md", "apt-get install -y debootstrap docker.io"): "root, apt and a Docker engine",
    ("docs/gpu.md", ".venv/bin/fcn-sweep bench --device cuda"): "a GPU (scripts/gpu_check.sh)",
    ("docs/local-sweeps.md", ".venv/bin/fcn-sweep sweep sweeps/grid.yaml --workers 2 --order random"): (
        "50 runs of 30 epochs on the full data: an hour on two cores (tests/test_local_sweep.py)"
    ),
    ("docs/local-sweeps.md", "scripts/postgres_local.sh ~/fcn-pg --port 5544 --listen '*'"): (
        "a login node, GPUs and the grid (tests/test_store.py: the same commands on a throwaway server)"
    ),
    ("docs/slurm.md", "scripts/postgres_local.sh ~/pg --listen '*'"): "a SLURM cluster (tests/test_slurm.py)",
    ("docs/slurm.md", "wandb sweep sweeps/grid.yaml"): "W&B's cloud and a SLURM cluster",
    ("docs/speed.md", ".venv/bin/fcn-sweep bench --device cpu"): "minutes of timing (tests/test_bench.py)",
    ("docs/training.md", ".venv/bin/fcn-sweep train --epochs=30 --hidden=1024,256"): (
        "30 epochs on the full data: minutes (tests/test_cli.py trains the same way, smaller)"
    ),
    ("docs/wandb.md", "scripts/setup.sh && .venv/bin/wandb sweep sweeps/grid.yaml"): "W&B's cloud",
}


def blocks() -> list[tuple[str, str, str]]:
    """(guide, language, text) of every bash and python block, in reading order."""
    found = []
    for guide in GUIDES:
        for lang, text in re.findall(r"^```(bash|python)\n(.*?)^```", guide.read_text(), flags=re.M | re.S):
            found.append((str(guide.relative_to(REPO)), lang, text))
    return found


def key(guide: str, text: str) -> tuple[str, str] | None:
    first = text.splitlines()[0]
    return next((k for k in [*RUN, *SKIP] if k[0] == guide and first.startswith(k[1])), None)


def test_every_block_of_the_guides_is_run_or_skipped_with_a_reason():
    unknown = [f"{g}: {t.splitlines()[0]}" for g, _, t in blocks() if key(g, t) is None]
    assert unknown == [], "add these to RUN or SKIP in tests/test_guides.py:\n" + "\n".join(unknown)
    seen = {key(g, t) for g, _, t in blocks()}
    assert set(RUN) | set(SKIP) <= seen, f"no longer in the guides: {(set(RUN) | set(SKIP)) - seen}"


@pytest.fixture
def checkout(tmp_path: Path) -> dict[str, str]:
    """A directory laid out as the guides expect, and the environment their commands run in."""
    (tmp_path / "sweeps").symlink_to(REPO / "sweeps")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "fcn-sweep"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m fcn_sweep "$@"\n')
    shim.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    path = f"{bin_dir}:{os.environ['PATH']}"
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PATH": path, "PYTHONPATH": pythonpath, "WANDB_MODE": "disabled", "HOME": str(tmp_path)}


@needs_data
def test_the_quick_blocks_of_the_guides_run_as_written(tmp_path, checkout):
    for guide, lang, text in blocks():
        subs = RUN.get(key(guide, text))  # type: ignore[arg-type]
        if subs is None:
            continue
        for old, new in subs.items():
            assert old in text, f"{guide}: the block no longer holds {old!r}; update RUN"
            text = text.replace(old, ",".join(run_ids(tmp_path)) if new == "{run_ids}" else new)
        cmd = ["bash", "-euo", "pipefail", "-c", text] if lang == "bash" else [sys.executable, "-c", text]
        proc = subprocess.run(cmd, cwd=tmp_path, env=checkout, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{guide}, the block:\n{text}\nfailed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"


def run_ids(root: Path) -> list[str]:
    """Two of the smoke sweep's run ids, one as its unique ending and one in full, as a reader types them."""
    runs = sorted(p.name for p in (root / "sweeps-out" / "fcn-smoke" / "runs").iterdir())
    return [runs[0].rsplit("-", 1)[-1], runs[1]]
