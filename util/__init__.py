"""The layer library and everything the matrix and Spark versions share."""
