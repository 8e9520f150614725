"""Two-layer fully connected network: 3072 -> 100 -> ReLU -> K."""

from matrix.classifier import Classifier
from util.network import Linear, ReLU
from util.optim import SGDConfig


class NNClassifier(Classifier):
    name = "nn"
    layers = (Linear(1, units=100), ReLU(2), Linear(3))
    defaults = SGDConfig(lr=0.05, momentum=0.9, weight_decay=1e-3)
