"""The static submission rules (spark/rules.py): each known way around them is refused with a
message naming the line and what is not allowed, and honest files (the solution, the
starter, a helper-heavy file) still pass.

Every case takes the solution's spark/linear.py, replaces one piece of it and expects one
message, on one of the lines the case adds.
"""

from __future__ import annotations

import ast

import pytest

from grading import starter
from spark import rules
from util.models import REPO

LINEAR = (REPO / "spark" / "linear.py").read_text(encoding="utf-8")
IMPORTS = "from util import layer"
IN_CHUNK = "            X, y = chunk"  # inside chunk_forward, in forward()
IN_FORWARD = "        return data.mapValues(chunk_forward)"


def _linear_with(old: str, new: str) -> tuple[str, set[int]]:
    """The solution's linear.py with `old` replaced by `new`, and the numbers of the lines
    `new` adds."""
    assert LINEAR.count(old) == 1, old
    src = LINEAR.replace(old, new, 1)
    start = LINEAR.index(old)
    first = LINEAR[:start].count("\n") + 1
    kept = old.splitlines()
    added = {first + i for i, x in enumerate(new.splitlines()) if x.strip() and x not in kept}
    assert added, new
    return src, added


def _after(anchor: str, *lines: str) -> tuple[str, str]:
    return anchor, "\n".join((anchor, *lines))


def _before(anchor: str, *lines: str) -> tuple[str, str]:
    return anchor, "\n".join((*lines, anchor))


HOLES = {
    # 1. code that runs when a def runs: defaults, annotations, decorators
    "module_function_default": (
        *_after(IMPORTS, "", "", "def f(x=open('g')):", "    return x"),
        "the default value of x in f() is not a constant (open('g'))",
    ),
    "keyword_only_default": (
        *_after(IMPORTS, "", "", "def f(*, x=len('abc')):", "    return x"),
        "the default value of x in f() is not a constant",
    ),
    "lambda_default_with_a_call": (
        *_after(IN_CHUNK, "            g = lambda a=sum(y): a"),
        "the default value of a in a lambda is not a constant (sum(y))",
    ),
    "default_comprehension": (
        *_after(IMPORTS, "", "", "def f(x=[i for i in range(3)]):", "    return x"),
        "the default value of x in f() is not a constant",
    ),
    "annotation_with_a_call": (
        *_after(IMPORTS, "", "", "def f(x: print('hi')) -> int:", "    return 1"),
        "the annotation of x in f() runs code (print('hi'))",
    ),
    "return_annotation_with_a_call": (
        *_after(IMPORTS, "", "", "def f(x) -> print('hi'):", "    return 1"),
        "the return annotation in f() runs code",
    ),
    "nested_decorator": (
        *_before("        def chunk_forward(chunk):", "        @functools.cache"),
        "decorators are not allowed (@functools.cache on chunk_forward)",
    ),
    "module_level_decorator": (
        *_after(IMPORTS, "", "", "@functools.cache", "def f(x):", "    return x"),
        "decorators are not allowed (@functools.cache on f)",
    ),
    "method_decorator": (
        *_before("    def forward(self, data", "    @staticmethod"),
        "decorators are not allowed (@staticmethod on forward)",
    ),
    # 2. attributes reached through a string
    "methodcaller": (
        *_after(IN_CHUNK, '            r = operator.methodcaller("loss_and_grads")(self, X, y)'),
        "uses .methodcaller: reaching attributes through a string",
    ),
    "attrgetter_attribute": (
        *_after(IN_CHUNK, '            r = operator.attrgetter("gradients")(self)'),
        "uses .attrgetter: reaching attributes through a string",
    ),
    "from_operator_import_attrgetter": (
        *_after(IMPORTS, "from operator import attrgetter"),
        "`from operator import attrgetter` imports attrgetter: reaching attributes through",
    ),
    "from_operator_import_methodcaller_as": (
        *_after(IMPORTS, "from operator import methodcaller as call"),
        "imports methodcaller: reaching attributes through a string",
    ),
    "get_type_hints_evaluates_text": (
        *_after(IMPORTS, "from typing import get_type_hints"),
        "imports get_type_hints: reaching attributes through a string (or evaluating text)",
    ),
    "format_attribute_field": (
        *_after(IN_CHUNK, '            s = "{0.gradients}".format(self)'),
        "uses .format with the field {0.gradients}, which reads an attribute",
    ),
    "format_map_dunder_field": (
        *_after(IN_CHUNK, '            s = "{x.__class__}".format_map({"x": X})'),
        "uses .format_map with the field {x.__class__}",
    ),
    "format_index_field": (
        *_after(IN_CHUNK, '            s = "{0[W1]}".format(params.value)'),
        "uses .format with the field {0[W1]}",
    ),
    "format_nested_field": (
        *_after(IN_CHUNK, '            s = "{:{0.value}}".format(params)'),
        "uses .format with the field {0.value}",
    ),
    "format_on_a_variable": (
        *_after(IN_CHUNK, '            t = "{0.gradients}"', "            s = t.format(self)"),
        "uses .format on t: only a string literal with plain fields",
    ),
    "str_format_unbound": (
        *_after(IN_CHUNK, '            s = str.format("{0.gradients}", self)'),
        "uses .format on str",
    ),
    "getattr_passed_as_a_value": (
        *_after(IN_CHUNK, '            m = functools.reduce(getattr, ["gradients"], self)'),
        "uses getattr, which is not allowed (not even as a value)",
    ),
    "match_pattern_reads_an_attribute": (
        *_after(
            IN_CHUNK,
            "            match self:",
            "                case LinearClassifier(gradients=g):",
            "                    pass",
        ),
        "the pattern reads .gradients",
    ),
    # 3. dunder names
    "dunder_file": (*_after(IN_CHUNK, "            s = __file__"), "uses __file__ (dunder names"),
    "dunder_builtins": (
        *_after(IN_CHUNK, '            b = __builtins__["open"]'),
        "uses __builtins__ (dunder names",
    ),
    "dunder_import": (
        *_after(IN_CHUNK, '            m = __import__("os")'),
        "uses __import__ (dunder names",
    ),
    "dunder_name": (*_after(IN_CHUNK, "            s = __name__"), "uses __name__"),
    "dunder_class": (*_after(IN_CHUNK, "            c = __class__"), "uses __class__"),
    # 4. numpy's files and native memory
    "np_fromfile": (
        *_after(IN_CHUNK, '            Z = np.fromfile("/etc/passwd")'),
        "uses .fromfile: file, process and JVM access through numpy or pyspark",
    ),
    "np_load": (*_after(IN_CHUNK, '            Z = np.load("w.npy")'), "uses .load: file"),
    "np_lib": (
        *_after(IN_CHUNK, "            Z = np.lib.stride_tricks.as_strided(X)"),
        "uses .lib: file",
    ),
    "np_ctypeslib": (
        *_after(IN_CHUNK, "            Z = np.ctypeslib.as_array(X)"),
        "uses .ctypeslib: file",
    ),
    "ndarray_tofile": (*_after(IN_CHUNK, '            X.tofile("x.bin")'), "uses .tofile: file"),
    "ndarray_ctypes": (*_after(IN_CHUNK, "            a = X.ctypes.data"), "uses .ctypes: file"),
    "from_numpy_import_fromfile": (
        *_after(IMPORTS, "from numpy import fromfile"),
        "`from numpy import fromfile` imports fromfile: file, process and JVM access",
    ),
    "import_numpy_ctypeslib": (
        *_after(IMPORTS, "import numpy.ctypeslib"),
        "`import numpy.ctypeslib` imports ctypeslib: file",
    ),
    "from_numpy_lib_import": (
        *_after(IMPORTS, "from numpy.lib.npyio import DataSource"),
        "imports lib: file",
    ),
    "private_numpy_module": (
        *_after(IMPORTS, "from numpy._core import multiarray"),
        "imports _core: a private module",
    ),
    "star_import": (*_after(IMPORTS, "from numpy import *"), "import names one by one"),
    "module_reached_through_typing": (
        *_after(IN_CHUNK, '            m = typing.sys.modules["os"]'),
        "uses .sys: a module that is not an allowed import",
    ),
    "module_reached_through_spark_classifier": (
        *_after(IMPORTS, "from spark.classifier import os"),
        "imports os: a module that is not an allowed import",
    ),
    "course_package_bound_whole": (
        *_after(IMPORTS, "import util.layer"),
        "`import util.layer` is not an allowed import (write `from util import layer`)",
    ),
    # 5. pyspark's files, processes and JVM
    "sc_textFile": (
        *_before(IN_FORWARD, '        lines = data.context.textFile("/etc/passwd")'),
        "uses .textFile: file, process and JVM access",
    ),
    "rdd_pipe": (*_before(IN_FORWARD, '        data = data.pipe("sh")'), "uses .pipe: file"),
    "rdd_saveAsTextFile": (
        *_before(IN_FORWARD, '        data.saveAsTextFile("out")'),
        "uses .saveAsTextFile: file",
    ),
    "sc_addPyFile": (
        *_before(IN_FORWARD, '        data.context.addPyFile("x.py")'),
        "uses .addPyFile: file",
    ),
    "broadcast_load_from_path": (
        *_after(IN_CHUNK, '            p = params.load_from_path("/tmp/x")'),
        "uses .load_from_path: file",
    ),
    "sc_jvm": (
        *_before(IN_FORWARD, "        jvm = data.context._jvm"),
        "uses ._jvm: a private attribute",
    ),
    "rdd_jrdd": (
        *_before(IN_FORWARD, "        j = data._jrdd"),
        "uses ._jrdd: a private attribute",
    ),
    "private_method_of_the_base_class": (
        *_before(IN_FORWARD, "        self._run(len, data)"),
        "uses ._run: a private attribute",
    ),
    "import_pyspark": (
        *_after(IMPORTS, "import pyspark"),
        "`import pyspark` is not an allowed import (from pyspark import only Broadcast, RDD,",
    ),
    "pyspark_submodule": (
        *_after(IMPORTS, "from pyspark.serializers import CloudPickleSerializer"),
        "`from pyspark.serializers import CloudPickleSerializer` is not an allowed import",
    ),
    "pyspark_other_name": (
        *_after(IMPORTS, "from pyspark import SparkContext"),
        "`from pyspark import SparkContext` is not an allowed import",
    ),
}


@pytest.mark.parametrize("old,new,message", HOLES.values(), ids=HOLES.keys())
def test_hole_is_refused_with_its_line(old, new, message):
    src, added = _linear_with(old, new)
    problems = rules.check_rules("linear", src)
    named = [p for p in problems if message in p]
    assert named, problems
    assert all(int(p.split(":")[0].removeprefix("line ")) in added for p in named), named


FINE = {
    "plain_format": _after(
        IN_CHUNK, '            s = "{} {:.3f} {n!r:>{w}}".format(1, 2.0, n=3, w=4)'
    ),
    "f_string": _after(IN_CHUNK, '            s = f"{len(y)} images, {X.shape[0]:>5d}"'),
    "constant_defaults": _after(
        IMPORTS,
        "",
        "",
        "def f(x=None, y=-1, z=(1, 'a'), *, w=math.inf, k=np.float64):",
        "    return x",
    ),
    "lambda_constant_default": _after(IN_CHUNK, "            g = lambda a, k=2: a * k"),
    "pyspark_names": _after(IMPORTS, "from pyspark import StorageLevel, TaskContext"),
    "course_module_as_name": _after(IMPORTS, "import util.layer as L"),
    "numpy_submodule": _after(IMPORTS, "import numpy.linalg as la"),
    "future_import": ("from __future__ import annotations", "from __future__ import annotations"),
}


@pytest.mark.parametrize("old,new", FINE.values(), ids=FINE.keys())
def test_near_misses_are_allowed(old, new):
    assert LINEAR.count(old) == 1
    assert rules.check_rules("linear", LINEAR.replace(old, new, 1)) == []


HONEST = '''\
"""Step 1, written with helpers."""

from __future__ import annotations

import itertools
import math
import operator
from collections import defaultdict
from functools import partial, reduce

import numpy as np
from pyspark import RDD, Broadcast, StorageLevel

from matrix.linear import LinearClassifier
from spark.classifier import Result, SparkClassifier, add_results
from util import layer

REDUCTION = "sum"
EPS: float = 1e-12
AXES = (0, 1)
NAMES = ("W1", "b1")
LEVEL = StorageLevel.MEMORY_ONLY


def total(values, start=0.0, *, scale=1.0):
    """The scaled sum of values."""
    return scale * reduce(operator.add, values, start)


def rms(a: np.ndarray, axis: int | None = None, eps=EPS) -> np.ndarray:
    return np.sqrt(np.mean(np.square(a), axis=axis) + eps)


def chunk_loss(scores: np.ndarray, y: np.ndarray, reduction: str = REDUCTION):
    return layer.softmax_loss(scores, y, reduction=reduction)


def describe(n: int, loss: float) -> str:
    return "{} images, loss {:.3f}".format(n, loss) + f" ({math.log(max(n, 1)):.2f})"


class LinearSpark(SparkClassifier, LinearClassifier):
    def forward(self, data: RDD, params: Broadcast) -> RDD:
        """Maps every chunk through the linear layer."""

        def chunk_forward(chunk, names=NAMES):
            X, y = chunk
            p = params.value
            W, b = (p[n] for n in names)
            scores, cache = layer.linear_forward(X, W, b)
            return scores, [cache], y

        return data.mapValues(chunk_forward)

    def backward(self, forwarded: RDD, params: Broadcast) -> Result:
        """Sums loss and gradients over the chunks."""
        grad = partial(layer.linear_backward)

        def chunk_backward(record):
            match record:
                case (_, (scores, [cache], y)):
                    pass
            loss, dscores = chunk_loss(scores, y)
            _, dW1, db1 = grad(dscores, cache)
            sums = defaultdict(float)
            for name, g in itertools.zip_longest(NAMES, (dW1, db1)):
                sums[name] = g
            assert np.all(np.isfinite(rms(dW1, axis=AXES))), describe(len(y), loss)
            return loss, len(y), dict(sums)

        return forwarded.map(chunk_backward).treeReduce(add_results)
'''


def test_honest_helper_heavy_file_passes():
    ast.parse(HONEST)
    assert rules.check_rules("linear", HONEST) == []


@pytest.mark.parametrize("model", ["linear", "nn", "cnn"])
def test_solution_and_starter_pass(model):
    rel = rules.STUDENT_FILES[model]
    assert rules.check_rules(model, (REPO / rel).read_text(encoding="utf-8")) == []
    assert rules.check_rules(model, starter.starter_text(rel)) == []


def test_solution_uses_no_private_attribute():
    """ALLOWED_PRIVATE_ATTRS lists exactly the private attributes the solution files use."""
    used = set()
    for rel in rules.STUDENT_FILES.values():
        tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
        used |= {
            n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr[0] == "_"
        }
    assert used == set(rules.ALLOWED_PRIVATE_ATTRS)


def test_rules_text_teaches_the_new_rules_briefly():
    text = rules.RULES
    for phrase in ("decorators", "default values", "annotations", "attrgetter", ".format()"):
        assert phrase in text, phrase
    for example in ("np.load", "np.fromfile", "sc.textFile", "rdd.pipe", "sc._jvm", "__file__"):
        assert example in text, example
    assert len(text.splitlines()) <= 25
