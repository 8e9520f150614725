"""Linear classifier: scores = X W1 + b1 (layer table and defaults: util/models.py)."""

from matrix.classifier import Classifier


class LinearClassifier(Classifier, model="linear"):
    pass
