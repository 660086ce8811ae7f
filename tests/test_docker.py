"""The image's contract, checked without Docker: a pinned CUDA base, the lock, a non-root user, the
`fcn-sweep` entry point, no secret in the build, a context that holds what the build reads, a CI matrix
over every optimizer and init; `train --from`; and, where a Docker engine runs, the full smoke (slow)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from fcn_sweep.config import INITS, OPTIMIZERS

from .conftest import REPO, cli, needs_data

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

FROM_BASE = {"torch", "torchvision"}  # provided by the base image, never by the lock


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(w[0].upper(), w[1] if len(w) > 1 else "") for w in (ln.split(None, 1) for ln in joined.splitlines()) if w]


def lock() -> dict[str, tuple[str, int]]:
    """name -> (pinned version, number of hashes) from docker/requirements.lock."""
    out: dict[str, tuple[str, int]] = {}
    text = re.sub(r"\\\n", " ", (REPO / "docker" / "requirements.lock").read_text())
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
            assert m, f"lock line is not name==version --hash=...: {line[:80]}"
            out[m[1].lower().replace("_", "-")] = (m[2], m[3].count("--hash"))
    return out


def test_base_image_is_an_arg_defaulting_to_a_pinned_cuda_pytorch_runtime():
    ins = instructions()
    froms = [args for op, args in ins if op == "FROM"]
    assert froms == ["${BASE_IMAGE}"], froms
    args = [args for op, args in ins[: [op for op, _ in ins].index("FROM")] if op == "ARG"]
    (default,) = [a.split("=", 1)[1] for a in args if a.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime(@sha256:[0-9a-f]{64})?", default)


def test_image_runs_as_a_non_root_user_through_the_fcn_sweep_entry_point():
    ins = instructions()
    users = [args for op, args in ins if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    (entry,) = [args for op, args in ins if op == "ENTRYPOINT"]
    assert json.loads(entry) == ["fcn-sweep"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fcn-sweep"] == "fcn_sweep.cli:main"


def test_no_secret_is_baked_into_the_image():
    ins = instructions()
    secretive = re.compile(r"WANDB_API_KEY|API_KEY|TOKEN|SECRET|PASSWORD", re.I)
    assert not [args for op, args in ins if op in ("ARG", "ENV", "LABEL") and secretive.search(args)]
    for path in [*sorted((REPO / "scripts").glob("*.sh")), *sorted((REPO / ".github").rglob("*.yml"))]:
        text = path.read_text()
        assert not re.search(r"--build-arg[ =]\S*(KEY|TOKEN|SECRET|PASSWORD)", text, re.I), path


def test_lock_pins_with_hashes_every_runtime_dependency_except_what_the_base_provides():
    pinned = lock()
    assert pinned and all(n_hashes >= 1 for _, n_hashes in pinned.values())
    assert not FROM_BASE & set(pinned), "torch/torchvision must come from the base image, not the lock"
    deps = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    for req in deps:
        name = req.name.lower().replace("_", "-")
        if name in FROM_BASE:
            continue
        assert name in pinned, f"{req.name} is a dependency but not in the lock; run scripts/lock.sh"
        assert req.specifier.contains(pinned[name][0], prereleases=True), f"lock pins {name}=={pinned[name][0]}"
    assert "wandb" in pinned, "the image must be able to run `fcn-sweep wandb-agent`"


def test_build_context_admits_what_the_build_reads_and_nothing_local():
    rules = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    assert rules[0] == "*", "whitelist: exclude everything, then admit what the build reads"
    admitted = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    run = " ".join(args for op, args in instructions() if op == "RUN")
    reads = {p.split("*")[0].rstrip("/") for p in re.findall(r"/src/(\S+)", run)}
    reads |= {"pyproject.toml", "README.md", "fcn_sweep"}  # what `pip install /src` reads (README: metadata)
    for path in reads:
        assert any(path == a or path.startswith(a + "/") for a in admitted), f"{path} is not in the build context"
    assert not [a for a in admitted if a.split("/")[0] in (".venv", "runs", "wandb", ".git")]


def test_docker_guide_runs_mount_runs_where_the_image_works():
    guide = (REPO / "docs" / "docker.md").read_text()
    workdir = [args for op, args in instructions() if op == "WORKDIR"][-1]
    section = guide.split("\n## ", 1)[0]
    mounts = re.findall(r'-v "\$PWD/runs:(\S+?)"', section)
    assert mounts and set(mounts) == {f"{workdir}/runs"}, mounts


def test_default_base_carries_a_torch_the_tests_run_on():
    """The default image's torch is inside pyproject's range, in CI's torch matrix, and the torch of
    the stand-in base (scripts/make_base_image.sh), which the smoke test compares with a bare run."""
    ins = instructions()
    (default,) = [a.split("=", 1)[1] for op, a in ins if op == "ARG" and a.startswith("BASE_IMAGE=")]
    version = re.match(r"pytorch/pytorch:(\d+\.\d+\.\d+)-", default)[1]
    deps = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    (torch_req,) = [r for r in deps if r.name == "torch"]
    assert torch_req.specifier.contains(version)
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    tested = wf["jobs"]["torch"]["strategy"]["matrix"]["torch"]
    assert version in tested
    assert list(torch_req.specifier.filter(tested)) == tested, "CI's torch matrix must lie inside pyproject's range"
    (lowest,) = [spec.version for spec in torch_req.specifier if spec.operator == ">="]
    assert min(tested, key=Version) == lowest, "the oldest torch pyproject allows is the oldest CI tests"
    stand_in = re.search(r"TORCH_SPEC:-torch==(\S+)", (REPO / "scripts" / "make_base_image.sh").read_text())[1]
    assert stand_in == version


def test_ci_smoke_matrix_covers_every_optimizer_init_and_batch_norm():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    matrix = wf["jobs"]["smoke"]["strategy"]["matrix"]
    assert (set(matrix["optimizer"]), set(matrix["init"])) == (set(OPTIMIZERS), set(INITS))
    assert sorted(matrix["batch_norm"]) == [False, True]
    steps = " ".join(s.get("run", "") for s in wf["jobs"]["smoke"]["steps"])
    assert "--epochs=1" in steps and "--subset=512" in steps
    assert any("docker_smoke.sh" in s.get("run", "") for s in wf["jobs"]["docker"]["steps"])


@pytest.mark.parametrize(
    ("script", "args", "env", "says"),
    [
        ("docker_smoke.sh", ["stray"], {}, "usage: "),
        ("docker_smoke.sh", [], {"DOCKER": "/nonexistent/docker"}, "docker client '/nonexistent/docker' not found"),
        ("docker_build.sh", [], {"FCN_SWEEP_DATA": "/nonexistent"}, "/nonexistent/train-images-idx3-ubyte.gz missing"),
        ("make_base_image.sh", ["a", "b"], {}, "usage: "),
        ("lock.sh", ["stray"], {}, "usage: "),
    ],
)
def test_scripts_refuse_bad_input_with_exit_2_and_one_line(script, args, env, says):
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr


@needs_data
def test_train_from_a_run_directory_or_its_config_json_reproduces_the_run(tmp_path):
    tiny = ["--epochs=1", "--hidden=32", "--subset=512", "--seed=3", "--quiet"]
    first = cli("train", *tiny, "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    (run_a,) = (tmp_path / "a").iterdir()
    runs = [run_a]
    for i, source in enumerate((run_a, run_a / "config.json")):
        again = cli("train", "--from", str(source), "--quiet", "--out", str(tmp_path / f"b{i}"))
        assert again.returncode == 0, again.stderr
        runs += list((tmp_path / f"b{i}").iterdir())

    def metrics(d):
        lines = (d / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]

    assert metrics(runs[0]) == metrics(runs[1]) == metrics(runs[2])
    assert len({(d / "config.json").read_text() for d in runs}) == 1


def test_train_from_a_missing_run_exits_2(tmp_path):
    proc = cli("train", "--from", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "cannot read config file" in proc.stderr
    assert not (tmp_path / "out").exists()


def docker_engine_answers() -> bool:
    docker = os.environ.get("DOCKER", "docker")
    if shutil.which(docker) is None:
        return False
    return subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers here")
def test_docker_image_reproduces_a_bare_run():
    """Builds the image (BASE_IMAGE, DOCKER, DOCKER_BUILD_FLAGS from the environment) and runs the smoke."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "docker_smoke.sh")],
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "metrics equal" in proc.stdout
