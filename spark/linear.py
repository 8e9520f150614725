"""Step 1: the linear classifier on Spark.

The RDDs of all three steps hold one record per chunk of images (chunks may
differ in size; the tester makes some of 1 image):

    data       (offset, (X, y))              X: (n, 3, 32, 32) float32|float64, y: (n,) int64,
                                             offset: the row of X[0] in the whole data set
    forward()  (offset, (scores, caches, y)) scores: (n, K) of X's dtype, caches: a list
                                             with one cache per layer, in layer order
    backward() one tuple for the whole RDD:  (loss_sum, n, grads), the softmax loss summed
                                             over all n images and one summed gradient per
                                             parameter, each of its parameter's shape

The driver divides by n once. Here there is one layer and two parameters:
W1 (3072, K) and b1 (K,).
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
