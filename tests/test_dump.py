"""Debug dumps: the matrix and Spark versions of a layer output compare equal; a defect shows.

The Spark side is the course's chunk RDD with a layer output computed per chunk here, not a
student's forward(), so these tests pass in the starter before any step is written.
"""

from __future__ import annotations

import numpy as np

from matrix.classifier import classifier_class
from spark.classifier import spark_class
from util import dump, layer


def test_matrix_and_spark_dumps_line_up(tmp_path, spark, sample64):
    X, y, _, _ = sample64
    X, y = X[:300], y[:300]
    params = classifier_class("nn")(seed=2, dtype=np.float64).params
    W1, b1 = params["W1"], params["b1"]
    h1, _ = layer.linear_forward(X, W1, b1)
    dump.dump_array(h1, tmp_path / "matrix", offsets=[0, 120, 150])

    # RDD[(offset, (X, y))] in uneven chunks, as the Spark classifiers see their data
    model = spark_class("nn")(spark=spark, partitions=3, chunks=[120, 30, 150])
    data = model.parallelize(X, y)
    relu = data.mapValues(lambda c: np.maximum(c[0].reshape(len(c[0]), -1) @ W1 + b1, 0))
    dump.dump_rdd(relu, tmp_path / "spark")
    model.release(data)

    assert sorted(p.name for p in (tmp_path / "spark").iterdir()) == [
        "chunk-00000000.txt",
        "chunk-00000120.txt",
        "chunk-00000150.txt",
    ]
    dump.dump_array(np.maximum(h1, 0), tmp_path / "matrix-relu", offsets=[0, 120, 150])
    assert dump.compare(tmp_path / "matrix-relu", tmp_path / "spark") == []
    diffs = dump.compare(tmp_path / "matrix", tmp_path / "spark")  # before vs after ReLU
    assert diffs and diffs[0].startswith("row 0:")


def test_compare_cli(tmp_path, capsys):
    A = np.arange(12.0).reshape(4, 3)
    dump.dump_array(A, tmp_path / "a", offsets=[0, 2])
    B = A.copy()
    B[3, 1] += 1
    dump.dump_array(B, tmp_path / "b")
    assert dump.main(["compare", str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert dump.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "row 3: max difference 1" in capsys.readouterr().out
    assert dump.main(["compare", str(tmp_path / "a"), str(tmp_path / "none")]) == 2
