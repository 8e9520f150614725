"""Running on a Spark standalone cluster: a local master and workers for tests
(`standalone`), the packed environment for executors that do not share the repository
(`pack_env`), and the spark-submit job that checks a cluster trains correctly (`job`)."""
