"""Builds the Cython layer kernels (util/_kernels.pyx).

Works with both `pip install -e .` and `python setup.py build_ext --inplace`.
"""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "util._kernels",
        ["util/_kernels.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
]

# the compiler directives are in the header of util/_kernels.pyx, next to the code they govern
setup(ext_modules=cythonize(extensions))
