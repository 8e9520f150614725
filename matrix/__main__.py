"""`python -m matrix {linear,nn,cnn} [options]`: train and validate in-process."""

import sys

from matrix import cli


def main(argv: list[str] | None = None) -> int:
    def body(args, prepared):
        return cli.run(args, cli.make_model(args, prepared), prepared)

    return cli.main_with(argv, "python -m matrix", None, body)


if __name__ == "__main__":
    sys.exit(main())
