"""`python -m spark {linear,nn,cnn} [options]`: `python -m matrix`'s training, on Spark."""

import argparse
import sys

from matrix import cli
from spark.classifier import SparkTaskError, spark_class
from spark.session import SparkSetupError, get_session


def add_spark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master", default="local[*]", help="Spark master: local[*], local[N] or spark://host:port"
    )
    parser.add_argument(
        "--partitions", type=int, help="RDD partitions (default: Spark's default parallelism)"
    )
    parser.add_argument(
        "--blas-threads", type=int, default=1, help="BLAS threads per Python worker"
    )
    parser.add_argument(
        "--task-attempts",
        type=int,
        default=1,
        help="attempts per Spark task before the iteration fails, local[N,F] masters "
        "included (default 1: an error in forward()/backward() stops the run at once "
        "instead of being retried)",
    )


def main(argv: list[str] | None = None) -> int:
    def body(args, prepared):
        spark = get_session(
            args.master,
            f"sparknet-{args.model}",
            args.blas_threads,
            task_attempts=args.task_attempts,
        )
        try:
            cls = spark_class(args.model)
            model = cli.make_model(args, prepared, cls, spark=spark, partitions=args.partitions)
            return cli.run(args, model, prepared)
        finally:
            spark.stop()

    try:
        return cli.main_with(argv, "python -m spark", add_spark_arguments, body)
    except (SparkSetupError, SparkTaskError) as e:
        print(f"python -m spark: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
