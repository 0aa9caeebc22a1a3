"""CIFAR-10 python batches are unpickled with an allow-list: data never runs code (issue 11 §1)."""

import os
import pickle

import numpy as np
import pytest

from tinyexport.errors import UserError
from tinyexport.train.data import Preprocessing, build_dataset
from tinyexport.train.data_readers import load_cifar10, read_cifar_batch


def _write_batch(path, count=4, seed=0, protocol=2):
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"training batch 1 of 5",
             b"labels": [int(v) for v in rng.integers(0, 10, count)],
             b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
             b"filenames": [f"img_{i}.png".encode() for i in range(count)]}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return batch


def _cifar_folder(root):
    root.mkdir()
    for i in range(1, 6):
        _write_batch(root / f"data_batch_{i}", seed=i)
    _write_batch(root / "test_batch", seed=9)
    return root


@pytest.mark.parametrize("protocol", [2, 4])
def test_real_format_batch_loads(tmp_path, protocol):
    batch = _write_batch(tmp_path / "b", protocol=protocol)
    data, labels = read_cifar_batch(tmp_path / "b")
    assert np.array_equal(data, batch[b"data"]) and labels == batch[b"labels"]


def test_folder_loads_through_the_spec(tmp_path):
    root = _cifar_folder(tmp_path / "cifar")
    images, labels = load_cifar10(root, "train")
    assert images.shape == (20, 32, 32, 3) and labels.dtype == np.int64
    assert len(build_dataset(f"cifar10:{root}", "val", Preprocessing(32), False)) == 4


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["reduce", "eval", "nested"])
def test_malicious_batch_never_runs(tmp_path, payload):
    marker = tmp_path / "PWNED"
    root = _cifar_folder(tmp_path / "cifar")
    exploit = _Exploit(marker)
    if payload == "reduce":
        evil = exploit
    elif payload == "eval":
        evil = {b"data": exploit, b"labels": []}
    else:
        evil = {b"labels": [1], b"data": np.zeros((1, 3072), np.uint8), b"x": [exploit]}
    (root / "test_batch").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(UserError, match="test_batch.*(refused, not run)"):
        build_dataset(f"cifar10:{root}", "val", Preprocessing(32), False)
    assert not marker.exists()


@pytest.mark.parametrize("content, fragment", [
    (b"", "cannot be read"), (b"not a pickle", "cannot be read"),
    (pickle.dumps([1, 2, 3]), "not a CIFAR-10 python batch"),
    (pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}),
     "not a CIFAR-10 python batch"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [11]}),
     r"label 11 is outside 0\.\.9"),
])
def test_corrupt_batches_are_clear_errors(tmp_path, content, fragment):
    (tmp_path / "b").write_bytes(content)
    with pytest.raises(UserError, match=fragment):
        read_cifar_batch(tmp_path / "b")
