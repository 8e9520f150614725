"""Step 3: the 10-layer CNN on Spark.

The layers are the table `self.layers` (util/models.py, shared with
matrix/cnn.py): each entry has `.forward(X, params) -> (out, cache)` and
`.backward(dout, cache) -> (dX, grads)` calling the util.layer functions.
Run the table over each chunk instead of writing ten layers out by hand.
The parameters are W1, b1, W4, b4, W7, b7, W10, b10 (named after the layer
numbers of the conv and fully connected layers).
"""

from __future__ import annotations

from pyspark import RDD, Broadcast

from matrix.cnn import CNNClassifier
from spark.classifier import Result, SparkClassifier, add_results
from util import layer


class CNNSpark(SparkClassifier, CNNClassifier):
    def forward(self, data: RDD, params: Broadcast) -> RDD:
        """data: RDD[(offset, (X, y))] -> RDD[(offset, (scores, [one cache per layer], y))]."""
        layers = self.layers  # a plain tuple: the closure must not capture self

        # BEGIN SOLUTION
        def chunk_forward(chunk):
            out, y = chunk
            caches = []
            for spec in layers:
                out, cache = spec.forward(out, params.value)
                caches.append(cache)
            return out, caches, y

        return data.mapValues(chunk_forward)
        # END SOLUTION

    def backward(self, forwarded: RDD, params: Broadcast) -> Result:
        """forwarded -> (loss_sum, n, one summed gradient per parameter:
        W1, b1, W4, b4, W7, b7, W10, b10)."""
        layers = self.layers

        # BEGIN SOLUTION
        def chunk_backward(record):
            scores, caches, y = record[1]
            loss, dout = layer.softmax_loss(scores, y, reduction="sum")
            grads = {}
            for spec, cache in zip(reversed(layers), reversed(caches), strict=True):
                dout, g = spec.backward(dout, cache)
                grads.update(g)
            return loss, len(y), grads

        return forwarded.map(chunk_backward).treeReduce(add_results)
        # END SOLUTION
