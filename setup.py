"""Builds the Cython layer kernels (util/_kernels.pyx).

Works with both `pip install -e .` and `python setup.py build_ext --inplace`.
"""

import hashlib
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# The kernels' build, compiled into the extension as util._kernels.BUILD: a hash of their
# source. The trainer compares it between the driver and every executor (trainer/executors.py).
KERNELS = Path(__file__).parent / "util" / "_kernels.pyx"
BUILD = hashlib.sha256(KERNELS.read_bytes()).hexdigest()[:12]

extensions = [
    Extension(
        "util._kernels",
        ["util/_kernels.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            ("SPARKNET_KERNELS_BUILD", f'"{BUILD}"'),
        ],
        extra_compile_args=["-O3"],
    )
]

# the compiler directives are in the header of util/_kernels.pyx, next to the code they govern
setup(ext_modules=cythonize(extensions))
