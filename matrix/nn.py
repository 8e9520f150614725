"""Two-layer fully connected network: 3072 -> 100 -> ReLU -> K (layer table and defaults:
util/models.py)."""

from matrix.classifier import Classifier


class NNClassifier(Classifier, model="nn"):
    pass
