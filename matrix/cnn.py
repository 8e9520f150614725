"""The 10-layer CNN for CIFAR-10: three conv-ReLU-pool blocks and a linear layer (layer
table and defaults: util/models.py)."""

from matrix.classifier import Classifier


class CNNClassifier(Classifier, model="cnn"):
    pass
