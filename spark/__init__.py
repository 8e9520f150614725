"""The Spark versions of the classifiers: the same layers mapped over chunks of an RDD."""
