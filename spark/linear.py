"""Step 1: the linear classifier on Spark.

Each record of the data RDD is one chunk of images:

    (offset, (X, y))   X: (n, 3, 32, 32) float, y: (n,) int, offset: row of X[0]

forward() turns every chunk into (offset, (scores, caches, y)); backward()
turns every forwarded chunk into (loss_sum, n, grads) and reduces them.
"""

from __future__ import annotations

from pyspark import RDD, Broadcast

from matrix.linear import LinearClassifier
from spark.classifier import Result, SparkClassifier, add_results
from util import layer


class LinearSpark(SparkClassifier, LinearClassifier):
    def forward(self, data: RDD, params: Broadcast) -> RDD:
        """data: RDD[(offset, (X, y))] -> RDD[(offset, (scores (n, K), [linear cache], y))].

        Lazy: a transformation only. params.value is the dict {"W1": (3072, K), "b1": (K,)}.
        """

        # BEGIN SOLUTION
        def chunk_forward(chunk):
            X, y = chunk
            p = params.value
            scores, cache = layer.linear_forward(X, p["W1"], p["b1"])
            return scores, [cache], y

        return data.mapValues(chunk_forward)
        # END SOLUTION

    def backward(self, forwarded: RDD, params: Broadcast) -> Result:
        """forwarded: forward()'s RDD -> (loss_sum, n, {"W1": dW1, "b1": db1}) over all chunks.

        Per chunk: softmax_loss(..., reduction="sum"), then linear_backward; then one
        treeReduce with add_results (the driver divides by n once).
        """

        # BEGIN SOLUTION
        def chunk_backward(record):
            scores, caches, y = record[1]
            loss, dscores = layer.softmax_loss(scores, y, reduction="sum")
            _, dW1, db1 = layer.linear_backward(dscores, caches[0])
            return loss, len(y), {"W1": dW1, "b1": db1}

        return forwarded.map(chunk_backward).treeReduce(add_results)
        # END SOLUTION
