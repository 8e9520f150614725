"""The Spark classifiers by name."""

from spark.classifier import SparkClassifier
from spark.cnn import CNNSpark
from spark.linear import LinearSpark
from spark.nn import NNSpark

SPARK_MODELS: dict[str, type[SparkClassifier]] = {
    "linear": LinearSpark,
    "nn": NNSpark,
    "cnn": CNNSpark,
}
