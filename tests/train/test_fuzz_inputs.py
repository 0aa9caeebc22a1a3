"""Seeded mutation fuzz over the files users hand us (issue 11, "keep it that way"): checkpoints,
IDX (Fashion-MNIST) and CIFAR batches. Every mutant must end in a clean UserError or load
correctly; any other exception is a bug. (The .tflite fuzz lives in tests/core.)"""

import gzip
import pickle
import random

import numpy as np
import pytest
import torch

from tinyexport.errors import UserError
from tinyexport.train.checkpoint_format import save_checkpoint
from tinyexport.train.data_readers import load_cifar10, load_fashion_mnist
from tinyexport.train.model_from_checkpoint import model_from_checkpoint
from tinyexport.train.models import build_model

MUTANTS = 60


def _mutants(data: bytes, seed: int, count: int = MUTANTS):
    """Byte flips, truncations, duplicated or zeroed runs: the damage a disk or a copy does."""
    rng = random.Random(seed)
    for _ in range(count):
        buf = bytearray(data)
        kind = rng.choice(("flip", "truncate", "zero", "splice"))
        at = rng.randrange(len(buf))
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del buf[at:]
        elif kind == "zero":
            buf[at:at + rng.randint(1, 64)] = bytes(min(64, len(buf) - at))
        else:
            buf[at:at] = buf[rng.randrange(len(buf)):][:rng.randint(1, 64)]
        yield kind, bytes(buf)


def _outcome(load) -> str:
    try:
        load()
    except UserError as exc:
        assert "\n" not in str(exc).strip() and "Traceback" not in str(exc)
        return "clean error"
    return "loaded"


def test_checkpoint_mutants(tmp_path):
    torch.manual_seed(0)
    model = build_model("mcunet-in0", num_classes=4, resolution=32)
    original = tmp_path / "ck.pt"
    save_checkpoint(model, original)
    outcomes = []
    for i, (_, data) in enumerate(_mutants(original.read_bytes(), seed=1)):
        path = tmp_path / f"m{i}.pt"
        path.write_bytes(data)
        outcomes.append(_outcome(lambda p=path: model_from_checkpoint(p)))
    assert "clean error" in outcomes  # the fuzz does reach the error paths


def _idx(values: np.ndarray) -> bytes:
    header = bytes((0, 0, 8, values.ndim)) + b"".join(
        int(d).to_bytes(4, "big") for d in values.shape)
    return header + values.astype(np.uint8).tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_idx_mutants(tmp_path, gz):
    rng = np.random.default_rng(0)
    images, labels = _idx(rng.integers(0, 256, (20, 28, 28))), _idx(rng.integers(0, 10, 20))
    outcomes = []
    for i, (_, data) in enumerate(_mutants(images, seed=2 + gz)):
        folder = tmp_path / f"f{i}"
        folder.mkdir()
        suffix = ".gz" if gz else ""
        write = gzip.compress if gz else (lambda b: b)
        (folder / f"t10k-images-idx3-ubyte{suffix}").write_bytes(write(data))
        (folder / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(write(labels))
        outcomes.append(_outcome(lambda d=folder: load_fashion_mnist(d, "val")))
    assert "clean error" in outcomes and "loaded" in outcomes


def test_cifar_batch_mutants(tmp_path):
    rng = np.random.default_rng(0)
    batch = pickle.dumps({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                          b"labels": [1, 2, 3, 4], b"batch_label": b"test"}, protocol=2)
    outcomes = []
    for i, (_, data) in enumerate(_mutants(batch, seed=5)):
        folder = tmp_path / f"c{i}"
        folder.mkdir()
        (folder / "test_batch").write_bytes(data)
        outcomes.append(_outcome(lambda d=folder: load_cifar10(d, "val")))
    assert "clean error" in outcomes
