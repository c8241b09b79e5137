"""IndexedCond: per-sample conditioning as a table of distinct rows and each sample's row."""

import pytest
import torch

from bossflow.core.conditioning import IndexedCond
from bossflow.core.errors import BossflowError


def test_rows_gather_each_samples_table_row():
    table = {"embeds": torch.arange(6.0).reshape(3, 2), "pooled": torch.tensor([10.0, 20.0, 30.0])}
    cond = IndexedCond(table, torch.tensor([2, 0, 1, 2]))
    assert cond.n_samples == 4
    assert torch.equal(cond.rows(torch.tensor([0, 3]))["embeds"], torch.tensor([[4.0, 5.0], [4.0, 5.0]]))
    assert torch.equal(cond.rows(slice(1, 3))["pooled"], torch.tensor([10.0, 20.0]))


def test_the_table_hash_follows_the_values():
    a = IndexedCond({"e": torch.zeros(2, 3)}, [0, 1])
    assert a.table_sha256() == IndexedCond({"e": torch.zeros(2, 3)}, [1, 1]).table_sha256()
    assert a.table_sha256() != IndexedCond({"e": torch.ones(2, 3)}, [0, 1]).table_sha256()


@pytest.mark.parametrize("table, index, words", [
    ({}, [0], "at least one table entry"),
    ({"a": torch.zeros(2), "b": torch.zeros(3)}, [0], "different row counts"),
    ({"a": torch.zeros(2)}, [2], "row numbers 0..1"),
    ({"a": torch.zeros(2)}, [-1], "row numbers 0..1"),
])
def test_bad_tables_and_indices_are_one_sentence(table, index, words):
    with pytest.raises(BossflowError, match=words):
        IndexedCond(table, index)
