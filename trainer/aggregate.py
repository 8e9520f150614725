"""Combining one round's results: a job over some of the RDD's partitions, reduced in a tree.

A round reads only its own partitions (`distributed.Layout.partitions_of_round`):
`select` makes an RDD of exactly those, in that order, from the cached data
(Spark's PartitionPruningRDD, so no other partition is scheduled or read).
`tree_sum` then adds the partitions' results in a fixed tree: level by level,
contiguous groups of at most `fan_in` results, summed on the executors in
partition order; the driver adds the last level in order. The tree's shape
depends only on the number of partitions, never on task timing, so a run is
reproducible; with depth 1 it is the sequential sum in partition order.

Why a tree: the driver receives one result per partition per round (gradients,
or parameters and velocities); with hundreds of partitions it would unpickle
and add all of them alone. With depth d it receives about W**(1/d) results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import reduce
from typing import Any

from pyspark import RDD

FAN_IN = 8  # most results added in one place: the driver's share for depth "auto"


def auto_depth(partitions: int, fan_in: int = FAN_IN) -> int:
    """The smallest depth whose groups hold at most `fan_in` results (1 up to 8 partitions,
    2 up to 64, 3 up to 512)."""
    if partitions < 1:
        raise ValueError(f"a round needs at least one partition, got {partitions}")
    depth = 1
    while fan_in**depth < partitions:
        depth += 1
    return depth


def group_size(partitions: int, depth: int) -> int:
    """Results per group at every level but the driver's: ceil(W ** (1 / depth)), at least 2."""
    return max(2, math.ceil(partitions ** (1.0 / depth) - 1e-9))


def select(rdd: RDD, partitions: Sequence[int]) -> RDD:
    """An RDD of exactly `partitions` of `rdd` (sorted indices), computed from its cache.

    Uses Spark's PartitionPruningRDD (a developer API of Spark 3 and 4): the filter is a
    Scala Set of the indices, which is a serialisable Int => Boolean."""
    wanted = sorted(int(p) for p in partitions)
    if list(partitions) != wanted or len(set(wanted)) != len(wanted):
        raise ValueError(f"partitions must be distinct and increasing, got {list(partitions)}")
    sc = rdd.context
    jvm = sc._jvm
    chosen = jvm.java.util.HashSet()
    for p in wanted:
        chosen.add(p)
    as_set = jvm.scala.collection.JavaConverters.asScalaSetConverter(chosen).asScala().toSet()
    pruned = jvm.org.apache.spark.rdd.PartitionPruningRDD.create(rdd._jrdd.rdd(), as_set)
    return RDD(pruned.toJavaRDD(), sc, rdd._jrdd_deserializer)


def _sum(values: Iterable[Any], add: Callable[[Any, Any], Any]) -> Any:
    return reduce(add, values)


def tree_sum(rdd: RDD, add: Callable[[Any, Any], Any], depth: int) -> Any:
    """The sum (by `add`, which must not modify its arguments) of every record of `rdd`.

    Records are added in partition order within a partition, then in the fixed tree described
    in the module docstring. One Spark job; depth 1 collects one value per partition."""
    n = rdd.getNumPartitions()
    level = rdd.mapPartitionsWithIndex(lambda i, it: [(i, _sum(it, add))])
    size = group_size(n, depth)
    for _ in range(depth - 1):
        groups = math.ceil(n / size)
        if groups == 1:
            break
        level = (
            level.map(lambda kv, s=size: (kv[0] // s, kv))
            .groupByKey(groups, partitionFunc=lambda g: g)
            .map(lambda g: (g[0], _sum((v for _, v in sorted(g[1], key=_first)), add)))
        )
        n = groups
    return _sum((v for _, v in sorted(level.collect(), key=_first)), add)


def _first(kv: tuple) -> Any:
    return kv[0]
