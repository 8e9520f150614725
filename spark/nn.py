"""Step 2: the two-layer network on Spark (linear 1, ReLU 2, linear 3).

Records as in spark/linear.py: forward() keeps every layer's cache in the
chunk's record, so backward() can run the layers in reverse on the executors.
"""

from __future__ import annotations

from pyspark import RDD, Broadcast

from matrix.nn import NNClassifier
from spark.classifier import Result, SparkClassifier, add_results
from util import layer


class NNSpark(SparkClassifier, NNClassifier):
    def forward(self, data: RDD, params: Broadcast) -> RDD:
        """data: RDD[(offset, (X, y))] -> RDD[(offset, (scores, [cache1, cache2, cache3], y))].

        params.value: {"W1": (3072, 100), "b1": (100,), "W3": (100, K), "b3": (K,)}.
        """

        # BEGIN SOLUTION
        def chunk_forward(chunk):
            X, y = chunk
            p = params.value
            h1, cache1 = layer.linear_forward(X, p["W1"], p["b1"])
            h2, cache2 = layer.relu_forward(h1)
            scores, cache3 = layer.linear_forward(h2, p["W3"], p["b3"])
            return scores, [cache1, cache2, cache3], y

        return data.mapValues(chunk_forward)
        # END SOLUTION

    def backward(self, forwarded: RDD, params: Broadcast) -> Result:
        """forwarded -> (loss_sum, n, {"W1": (3072, 100), "b1": (100,), "W3": (100, K),
        "b3": (K,)}), each gradient summed over all chunks."""

        # BEGIN SOLUTION
        def chunk_backward(record):
            scores, (cache1, cache2, cache3), y = record[1]
            loss, dscores = layer.softmax_loss(scores, y, reduction="sum")
            dh2, dW3, db3 = layer.linear_backward(dscores, cache3)
            dh1 = layer.relu_backward(dh2, cache2)
            _, dW1, db1 = layer.linear_backward(dh1, cache1)
            return loss, len(y), {"W1": dW1, "b1": db1, "W3": dW3, "b3": db3}

        return forwarded.map(chunk_backward).treeReduce(add_results)
        # END SOLUTION
