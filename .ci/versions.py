"""Prints the versions one test environment runs with, on one line, for CI's log:

    == <label>: Python 3.11.7, pyspark 3.5.0 (Spark jars 3.5.0), numpy 1.26.0, Java 17.0.15

Run with the environment's interpreter: `<venv>/bin/python .ci/versions.py <label>`. The Spark
version is read from the jars pyspark ships (what the JVM runs), not only from the Python
package; Java is the one Spark starts (JAVA_HOME's, else the `java` on PATH).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path


def spark_jars_version() -> str:
    """The version in the name of pyspark's spark-core jar, e.g. 3.5.0 (or '?')."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    for jar in sorted(jars.glob("spark-core_*.jar")):
        m = re.match(r"spark-core_[\d.]+-(.+)\.jar$", jar.name)
        if m:
            return m.group(1)
    return "?"


def java_version() -> str:
    """The version Spark's launcher will find, from `java -version` (or 'not found')."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else "java"
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    except OSError:
        return "not found"
    m = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    return m.group(1) if m else "?"


def main(argv: list[str]) -> int:
    import numpy
    import pyspark

    label = argv[0] if argv else sys.prefix
    print(
        f"== {label}: Python {platform.python_version()}, pyspark {pyspark.__version__} "
        f"(Spark jars {spark_jars_version()}), numpy {numpy.__version__}, "
        f"Java {java_version()}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
