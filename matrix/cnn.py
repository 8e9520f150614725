"""The 10-layer CNN for CIFAR-10 (three conv-ReLU-pool blocks and a linear layer).

 1 conv 16 filters 5x5, stride 1, pad 2   32x32x16
 2 ReLU
 3 max-pool 2x2, stride 2                 16x16x16
 4 conv 20 filters 5x5, stride 1, pad 2   16x16x20
 5 ReLU
 6 max-pool 2x2, stride 2                  8x8x20
 7 conv 20 filters 5x5, stride 1, pad 2    8x8x20
 8 ReLU
 9 max-pool 2x2, stride 2                  4x4x20
10 fully connected 320 -> K, softmax cross-entropy loss
"""

from matrix.classifier import Classifier
from util.network import Conv, Linear, MaxPool, ReLU
from util.optim import SGDConfig


class CNNClassifier(Classifier):
    name = "cnn"
    layers = (
        Conv(1, filters=16, size=5, pad=2),
        ReLU(2),
        MaxPool(3),
        Conv(4, filters=20, size=5, pad=2),
        ReLU(5),
        MaxPool(6),
        Conv(7, filters=20, size=5, pad=2),
        ReLU(8),
        MaxPool(9),
        Linear(10),
    )
    defaults = SGDConfig(lr=0.01, momentum=0.9, weight_decay=5e-4)
