"""``subset``: the one fixed-random-subset helper of ``tinytrain`` (--limit-*) and transfer."""

from __future__ import annotations

import torch

from tinyexport.train.data import SubsetDataset, subset


class _Labelled(torch.utils.data.Dataset):
    """Item i is (i, i % 4); four named classes."""

    classes = ["a", "b", "c", "d"]

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int):
        return i, i % 4


def test_no_limit_returns_the_dataset_itself():
    ds = _Labelled()
    assert subset(ds, None, 0) is ds and subset(ds, 20, 0) is ds


def test_limit_is_a_sorted_seeded_random_choice():
    ds = _Labelled()
    picked = subset(ds, 5, seed=3)
    expected = sorted(torch.randperm(20, generator=torch.Generator().manual_seed(3))[:5].tolist())
    assert isinstance(picked, SubsetDataset) and picked.indices == expected
    assert [picked[i][0] for i in range(5)] == expected
    assert picked.dataset is ds and picked.classes == ds.classes
    assert subset(ds, 5, seed=3).indices == expected  # the same on every call / rank


def test_indices_and_remap_select_classes():
    ds = _Labelled()
    keep = [i for i in range(20) if i % 4 in (2, 3)]
    picked = subset(ds, None, 0, keep, {2: 0, 3: 1})
    assert len(picked) == 10 and picked.classes == ["c", "d"]
    assert {picked[i][1] for i in range(10)} == {0, 1}
    assert all(picked[i][0] % 4 == picked[i][1] + 2 for i in range(10))
