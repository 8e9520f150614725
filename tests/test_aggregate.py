"""trainer.aggregate: a round reads only its partitions, and their results are added in a
fixed tree: the same sum as a sequential fold in partition order at depth 1, the same tree's
sum on the driver at any depth, the same result on every run, in one Spark job."""

from __future__ import annotations

import math
from functools import reduce

import numpy as np
import pytest

from trainer import aggregate, distributed
from trainer.train import Trainer
from util.numerics import rel_error


def python_tree(values: list, depth: int):
    """The tree of aggregate.tree_sum, summed in this process."""
    level = list(values)
    size = aggregate.group_size(len(values), depth)
    for _ in range(depth - 1):
        if math.ceil(len(level) / size) == 1:
            break
        level = [reduce(distributed.add, level[i : i + size]) for i in range(0, len(level), size)]
    return reduce(distributed.add, level)


def results(n: int, seed: int = 0) -> list[tuple]:
    """n round results like sync's: (loss sum, images, {name: gradient}), spread widely in
    magnitude so that the order of addition shows in the last bits."""
    rng = np.random.default_rng(seed)
    return [
        (float(rng.standard_normal() * 10.0 ** rng.integers(-8, 8)), int(rng.integers(1, 9)),
         {"W1": rng.standard_normal((3, 4)) * 10.0 ** rng.integers(-8, 8, (3, 4))})
        for _ in range(n)
    ]  # fmt: skip


def same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2]["W1"], b[2]["W1"])


def test_auto_depth_keeps_groups_at_most_eight():
    assert [aggregate.auto_depth(w) for w in (1, 2, 8, 9, 64, 65, 256, 512, 513)] == [
        1, 1, 1, 2, 2, 3, 3, 3, 4,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least one partition"):
        aggregate.auto_depth(0)


def test_select_reads_exactly_the_chosen_partitions_in_order(spark):
    sc = spark.sparkContext
    rdd = sc.parallelize([(i, f"block {i}") for i in range(12)], 12).cache()
    chosen = aggregate.select(rdd, [3, 7, 8])
    assert chosen.getNumPartitions() == 3
    assert chosen.glom().collect() == [[(3, "block 3")], [(7, "block 7")], [(8, "block 8")]]
    with pytest.raises(ValueError, match="distinct and increasing"):
        aggregate.select(rdd, [7, 3])
    rdd.unpersist()


@pytest.mark.parametrize("n, depth", [(1, 1), (5, 1), (9, 2), (20, 2), (20, 3), (64, 2), (65, 3)])
def test_tree_sum_is_the_fixed_tree_of_partition_order(spark, n, depth):
    values = results(n, seed=n)
    rdd = spark.sparkContext.parallelize(values, n)
    got = aggregate.tree_sum(rdd, distributed.add, depth)
    assert same(got, python_tree(values, depth))
    assert same(got, aggregate.tree_sum(rdd, distributed.add, depth))  # every run alike
    if depth == 1:
        assert same(got, reduce(distributed.add, values))


def test_the_comparison_sees_the_order_of_addition(spark):
    """The bitwise checks above can fail: another tree gives another sum."""
    values = results(20, seed=20)
    rdd = spark.sparkContext.parallelize(values, 20)
    assert not same(aggregate.tree_sum(rdd, distributed.add, 3), python_tree(values, 1))


def test_add_never_modifies_its_arguments():
    a, b = results(2)
    keep = (a[2]["W1"].copy(), b[2]["W1"].copy())
    total = distributed.add(a, b)
    assert np.array_equal(a[2]["W1"], keep[0]) and np.array_equal(b[2]["W1"], keep[1])
    assert total[1] == a[1] + b[1] and total[2]["W1"] is not a[2]["W1"]


def job_count(spark, group: str, fn) -> int:
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try:
        fn()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return len(sc.statusTracker().getJobIdsForGroup(group))


@pytest.mark.parametrize("mode, k", [("sync", 1), ("avg", 2)])
def test_a_deeper_tree_trains_alike_in_one_job_per_round(spark, tmp_path, train_settings, mode, k):
    """4 partitions in groups of 2 (depth 2) against all 4 on the driver (depth 1): equal
    up to the order of addition, and still one job per round (that the tree's sum is the
    same on every run is shown above)."""

    def run(name: str, depth: int) -> Trainer:
        s = train_settings(
            tmp_path / name, mode=mode, avg_every=k, partitions=4, batch=80, tree_depth=depth
        )
        t = Trainer(s, spark)
        try:
            rounds = s.max_steps // k
            jobs = job_count(spark, f"tree-{mode}-{name}", lambda: t.run(quiet=True))
        finally:
            t.close()
        assert jobs == rounds, "one job per round"
        return t

    flat, tree = run("flat", 1), run("tree", 2)
    for k_ in flat.model.params:
        assert 0 < rel_error(flat.model.params[k_], tree.model.params[k_]) <= 1e-12
