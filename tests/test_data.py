import gzip
import shutil

import numpy as np
import pytest
import torch

from fcn_sweep import data as data_mod
from fcn_sweep.data import DataError, Split, batches, parse_idx, split_indices

from .conftest import cli, needs_data


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_fake_dataset(directory, n_train=100, n_test=20, compress=True):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, a in arrays.items():
        raw = idx_bytes(a)
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return arrays


def test_idx_round_trip():
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    assert np.array_equal(parse_idx(idx_bytes(images)), images)
    labels = np.array([3, 1, 4])
    assert np.array_equal(parse_idx(idx_bytes(labels)), labels)


@pytest.mark.parametrize("raw", [b"", b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00", idx_bytes(np.zeros((3, 4)))[:-1]])
def test_parse_idx_rejects_what_is_not_idx(raw):
    with pytest.raises(ValueError):
        parse_idx(raw)


@pytest.mark.parametrize("compress", [True, False])
def test_files_that_are_not_the_published_ones_are_refused_with_their_path(tmp_path, compress):
    write_fake_dataset(tmp_path, compress=compress)
    data_mod.load_arrays.cache_clear()
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*md5.*dataset-fashion-mnist"):
        data_mod.load_arrays(str(tmp_path))


def test_a_directory_missing_files_names_them(tmp_path):
    write_fake_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte") as err:
        data_mod.locate(tmp_path)
    assert "train-images" not in str(err.value)


def test_env_var_points_at_the_data(tmp_path, monkeypatch):
    write_fake_dataset(tmp_path, compress=False)
    monkeypatch.setenv("FCN_SWEEP_DATA", str(tmp_path))
    assert data_mod.locate()["train-images-idx3-ubyte"] == tmp_path / "train-images-idx3-ubyte"


def test_split_is_fixed_disjoint_and_complete():
    train, val = split_indices(600, val_size=100)
    train2, val2 = split_indices(600, val_size=100)
    assert np.array_equal(train, train2) and np.array_equal(val, val2)
    assert len(val) == 100 and len(train) == 500
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(600))


def _split(n):
    return Split(torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3), torch.arange(n))


def test_batches_visit_every_sample_once_in_a_seeded_order():
    split = _split(130)
    order = [y for _, yb in batches(split, 32, torch.Generator().manual_seed(1)) for y in yb.tolist()]
    again = [y for _, yb in batches(split, 32, torch.Generator().manual_seed(1)) for y in yb.tolist()]
    other = [y for _, yb in batches(split, 32, torch.Generator().manual_seed(2)) for y in yb.tolist()]
    assert sorted(order) == list(range(130))
    assert order == again and order != other


def test_a_trailing_batch_of_one_is_dropped_for_batch_norm():
    sizes = [len(yb) for _, yb in batches(_split(65), 32, torch.Generator().manual_seed(0))]
    assert sizes == [32, 32]


@needs_data
def test_real_files_verify_and_load():
    data_mod.load_arrays.cache_clear()
    a = data_mod.load_arrays()
    assert a["train_x"].shape == (60_000, 784) and a["test_x"].shape == (10_000, 784)
    assert np.bincount(a["train_y"]).tolist() == [6000] * 10
    assert np.bincount(a["test_y"]).tolist() == [1000] * 10


@needs_data
def test_real_splits_on_the_device_are_normalised_by_the_training_split():
    d = data_mod.load("cpu")
    assert (len(d.train), len(d.val), len(d.test)) == (50_000, 10_000, 10_000)
    assert d.train.x.dtype == torch.float32 and d.train.x.shape[1] == 784
    assert d.train.x.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert d.train.x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert abs(d.test.x.mean().item()) < 0.05  # test statistics were not used, but are alike
    assert data_mod.load("cpu", subset=1000).train.x.shape == (1000, 784)


@needs_data
def test_a_corrupted_copy_of_a_real_file_is_refused(tmp_path):
    for path in data_mod.locate(download=False).values():
        shutil.copy(path, tmp_path / path.name)
    target = next(tmp_path.glob("t10k-labels*"))
    raw = bytearray(gzip.decompress(target.read_bytes()) if target.suffix == ".gz" else target.read_bytes())
    raw[100] ^= 0xFF
    target.write_bytes(gzip.compress(bytes(raw)) if target.suffix == ".gz" else bytes(raw))
    data_mod.load_arrays.cache_clear()
    with pytest.raises(DataError, match=str(target)):
        data_mod.load_arrays(str(tmp_path))


@needs_data
@pytest.mark.parametrize("offset", [100, 800])
def test_a_flipped_byte_inside_the_compressed_stream_is_one_line_and_exit_2(tmp_path, offset):
    """A byte flipped inside the deflate stream (not in the decompressed content) makes zlib itself
    fail: `fcn-sweep train` says which file in one line, as for any other unreadable gzip file."""
    for path in data_mod.locate(download=False).values():
        shutil.copy(path, tmp_path / path.name)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    blob = bytearray(target.read_bytes())
    blob[offset] ^= 0x55
    target.write_bytes(bytes(blob))
    proc = cli("train", "--data-dir", str(tmp_path), "--epochs=1", "--quiet", "--out", str(tmp_path / "out"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"{target} is not a readable gzip file" in lines[0]
    assert not (tmp_path / "out").exists()
