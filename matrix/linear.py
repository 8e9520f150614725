"""Linear classifier: scores = X W1 + b1."""

from matrix.classifier import Classifier
from util.network import Linear
from util.optim import SGDConfig


class LinearClassifier(Classifier):
    name = "linear"
    layers = (Linear(1),)
    defaults = SGDConfig(lr=0.02, momentum=0.9, weight_decay=1e-3)
