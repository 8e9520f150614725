"""The static submission rules: `RULES` (the text students and staff read) and
`check_rules(model, source)`, which parses a student file and names every violation.

The grader rejects a file that breaks them (0 points for its step, nothing run), and
`make test-<step>` / `make check-submission` run the same check on the student's file. The
protected structure comes from the code, not from a copy of the starter: the class name
from the registry (util/models.py), its bases from `SparkClassifier` and the registry's
matrix class, the forward()/backward() parameters from SparkClassifier's own methods, the
starter's imports from STARTER_IMPORTS. A teaching aid and a first filter, not the security
boundary.
"""

from __future__ import annotations

import ast
import string
from pathlib import Path

from util import models

STUDENT_FILES = {m.name: m.student_file for m in models.STEPS}  # model -> "spark/nn.py"
BASE_CLASS = "SparkClassifier"  # spark/classifier.py: the students' methods and their parameters
STUDENT_METHODS = ("forward", "backward")  # the only methods a student class defines

RULES = f"""\
Submission rules (checked before anything runs; a file that breaks one scores 0 on its step):
- Only {", ".join(STUDENT_FILES.values())} are graded; every other file is
  ignored and the grader uses the original.
- Outside the TODO regions the file keeps the starter's structure: the class with the same
  name and base classes, forward() and backward() with the same parameters, and nothing else
  in the class. Module-level helper functions and constants are fine; module-level code that
  runs anything (calls) is not. No decorators anywhere; default values are constants
  (`def f(x=None)`, not `def f(x=g())`) and annotations call nothing.
- Imports only from: numpy, functools, operator, itertools, math, collections, typing,
  util.layer (`from util import layer`), spark.classifier, `from pyspark import RDD,
  Broadcast, StorageLevel, TaskContext`, and the imports the starter file already has; no
  `import *`. Each file stands alone (no importing another step's file).
- No eval/exec/compile/open/getattr/setattr/delattr/globals/locals/vars/help/breakpoint/
  input/exit (not even passed as values), no global statements, no dunder names or
  attributes (__file__, x.__dict__, ...), no private attributes (x._name), no assigning
  attributes of imported modules or classes.
- No attributes reached through a string: no operator.attrgetter/methodcaller, and .format()
  only on a string literal with plain fields ("{{}} {{:.3f}}", not "{{0.x}}"); f-strings are fine.
- No file, process or JVM access through numpy or pyspark (np.load, np.fromfile, np.lib,
  x.tofile, sc.textFile, rdd.pipe, rdd.saveAsTextFile, sc._jvm, ...).
- None of the matrix version's training methods (gradients, loss_and_grads, train, step,
  predict, validate, accuracy_on, prepare): the Spark version computes its gradients itself.
"""

# `import X` / `from X import ...` for these and their submodules (the course modules only
# with `from`: `import util.layer` would bind the whole util package)
LIBRARY_MODULES = ("numpy", "functools", "operator", "itertools", "math", "collections", "typing")
COURSE_MODULES = ("util.layer", "spark.classifier")
ALLOWED_MODULES = (*LIBRARY_MODULES, *COURSE_MODULES, "__future__")
# pyspark only through these names: its modules reach files, processes and the JVM
PYSPARK_NAMES = {"RDD", "Broadcast", "StorageLevel", "TaskContext"}
ALLOWED_FROM = {"util": {"layer"}, "util.network": {"Params"}, "pyspark": PYSPARK_NAMES}
# the imports every starter file has (each file also imports its matrix class: starter_imports)
STARTER_IMPORTS = (
    "from __future__ import annotations",
    "from pyspark import RDD, Broadcast",
    "from spark.classifier import Result, SparkClassifier, add_results",
    "from util import layer",
)
# builtins that run text as code, reach attributes or modules by name, or leave the process;
# refused as calls and as values (`reduce(getattr, ...)`)
FORBIDDEN_BUILTINS = {
    "eval",
    "exec",
    "compile",
    "open",
    "getattr",
    "setattr",
    "delattr",
    "globals",
    "locals",
    "vars",
    "help",  # pydoc imports any module named in a string
    "breakpoint",
    "input",
    "exit",
    "quit",
    "memoryview",
}
# the matrix version's training: the Spark version computes its gradients itself
MATRIX_TRAINING_ATTRS = {
    "gradients",
    "loss_and_grads",
    "train",
    "step",
    "predict",
    "validate",
    "accuracy_on",
    "prepare",
}
# reach an attribute named by a string, or evaluate annotation text as code
BY_NAME_ATTRS = {"attrgetter", "methodcaller", "get_type_hints", "evaluate_forward_ref"}
# numpy's files and native memory, and the numpy modules behind them
NUMPY_FILE_ATTRS = {
    "fromfile",
    "tofile",
    "dump",  # ndarray.dump(path) pickles to a file (also Broadcast.dump)
    "load",
    "loadtxt",
    "save",
    "savez",
    "savez_compressed",
    "savetxt",
    "genfromtxt",
    "fromregex",
    "memmap",
    "DataSource",
    "ctypeslib",
    "ctypes",
    "lib",
    "core",
    "_core",
    "compat",
    "testing",
    "f2py",
    "distutils",
    "show_config",
}
# pyspark's files, processes and JVM
PYSPARK_IO_ATTRS = {
    "textFile",
    "wholeTextFiles",
    "binaryFiles",
    "binaryRecords",
    "pickleFile",
    "sequenceFile",
    "hadoopFile",
    "hadoopRDD",
    "newAPIHadoopFile",
    "newAPIHadoopRDD",
    "saveAsTextFile",
    "saveAsPickleFile",
    "saveAsSequenceFile",
    "saveAsHadoopFile",
    "saveAsNewAPIHadoopFile",
    "saveAsHadoopDataset",
    "saveAsNewAPIHadoopDataset",
    "addFile",
    "addPyFile",
    "addArchive",
    "addJar",
    "setCheckpointDir",
    "setSystemProperty",
    "pipe",
    "read",
    "write",
    "readStream",
    "writeStream",
    "sql",
    "SparkFiles",
    "load_from_path",  # Broadcast.load_from_path(path) unpickles any file
    "dump_profiles",  # SparkContext.dump_profiles(path) writes files
}
# modules that allowed modules import for themselves (typing.sys, typing.types,
# spark.classifier.os, spark.classifier.network): reaching one is importing it
REACHABLE_MODULES = {"os", "sys", "builtins", "types", "importlib", "logging", "network", "models"}
# private attributes (x._name) the solution files use: none, so `sc._jvm` and the like are out
ALLOWED_PRIVATE_ATTRS: frozenset[str] = frozenset()
# str methods that read attributes and items named in their template ("{0.gradients}")
FORMAT_METHODS = ("format", "format_map")
# why a name is refused, by group (for attributes, from-imported names and module paths)
_BANNED_NAMES = (
    (BY_NAME_ATTRS, "reaching attributes through a string (or evaluating text) is not allowed"),
    (
        NUMPY_FILE_ATTRS | PYSPARK_IO_ATTRS,
        "file, process and JVM access through numpy or pyspark is not allowed",
    ),
    (REACHABLE_MODULES, "a module that is not an allowed import"),
)
# module-level assignments holding one of these run code: not a constant
_RUNS_CODE = (
    ast.Call,
    ast.Lambda,
    ast.ListComp,
    ast.DictComp,
    ast.SetComp,
    ast.GeneratorExp,
    ast.NamedExpr,
    ast.Await,
    ast.Yield,
    ast.YieldFrom,
)


def starter_imports(model: str) -> set[str]:
    """The import statements (as `ast.unparse` writes them) the starter file of `model` has:
    STARTER_IMPORTS and its matrix class (`from matrix.linear import LinearClassifier`)."""
    module, _, cls = models.get(model).matrix_class.partition(":")
    return {*STARTER_IMPORTS, f"from {module} import {cls}"}


def protected_bases(model: str) -> list[str]:
    """The base classes of the student class: `SparkClassifier, LinearClassifier`."""
    return [BASE_CLASS, models.get(model).matrix_class.partition(":")[2]]


def protected_methods() -> dict[str, ast.FunctionDef]:
    """forward() and backward() as SparkClassifier (spark/classifier.py) defines them: their
    parameters are the ones a student class keeps."""
    path = Path(__file__).with_name("classifier.py")
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    base = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == BASE_CLASS)
    methods = {n.name: n for n in base.body if isinstance(n, ast.FunctionDef)}
    return {name: methods[name] for name in STUDENT_METHODS}


def _signature(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    return [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [
        f"*{a.vararg.arg}" if a.vararg else "",
        f"**{a.kwarg.arg}" if a.kwarg else "",
    ]


def _module_ok(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in ALLOWED_MODULES)


def _banned(name: str) -> str | None:
    """Why a name is refused as an attribute, a from-imported name or part of a module path
    (None: it is fine). Dunder and private names are the callers' own cases."""
    for names, why in _BANNED_NAMES:
        if name in names:
            return why
    return None


def _attr_problem(attr: str) -> str | None:
    """Why `x.<attr>` (or importing or matching the name attr) is refused; None: it is fine."""
    if attr.startswith("__") and attr.endswith("__"):
        return "a dunder attribute (Python's internals)"
    if attr.startswith("_") and attr not in ALLOWED_PRIVATE_ATTRS:
        return "a private attribute (names starting with _ are internals)"
    if attr in MATRIX_TRAINING_ATTRS:
        return (
            "part of the matrix version's training; "
            "compute the gradients with the util.layer functions instead"
        )
    return _banned(attr)


def _format_fields(template: str) -> list[str]:
    """The field names of a str.format template, nested ones ("{:{width}}") included; raises
    ValueError for a malformed template."""
    fields = []
    for _, name, spec, _ in string.Formatter().parse(template):
        if name is not None:
            fields.append(name)
        if spec:
            fields += _format_fields(spec)
    return fields


def _format_problem(node: ast.Attribute) -> str | None:
    """`.format`/`.format_map` is fine on a string literal whose fields are plain ("{}",
    "{0:.3f}", "{name}"); fields like "{0.x}" or "{x[k]}" read attributes and items by name."""
    recv = node.value
    if not (isinstance(recv, ast.Constant) and isinstance(recv.value, str)):
        return (
            f"uses .{node.attr} on {ast.unparse(recv)}: only a string literal with plain fields "
            "may be formatted (write an f-string instead)"
        )
    try:
        bad = [f for f in _format_fields(recv.value) if "." in f or "[" in f]
    except ValueError:
        return f"uses .{node.attr} on a malformed template {recv.value!r}"
    if bad:
        return (
            f"uses .{node.attr} with the field {{{bad[0]}}}, which reads an attribute or item by "
            "name (write an f-string instead)"
        )
    return None


def _import_problems(node: ast.Import | ast.ImportFrom, allowed_imports: set[str]) -> list[str]:
    """An import outside the allow-list, a star import, or one that reaches a refused name."""
    text = f"`{ast.unparse(node)}`"
    if text.strip("`") in allowed_imports:
        return []
    if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
        return [f"{text} is not allowed: import names one by one"]
    if isinstance(node, ast.Import):
        modules = [a.name for a in node.names]
        ok = all(_module_ok(m) for m in modules)
        whole_package = [
            a.name
            for a in node.names
            if a.asname is None and "." in a.name and a.name.startswith(COURSE_MODULES)
        ]
        if ok and whole_package:
            package, _, name = whole_package[0].rpartition(".")
            return [f"{text} is not an allowed import (write `from {package} import {name}`)"]
        names = []
    else:
        mod = node.module or ""
        modules = [mod]
        names = [a.name for a in node.names]
        ok = not node.level and (
            _module_ok(mod) or (mod in ALLOWED_FROM and set(names) <= ALLOWED_FROM[mod])
        )
    if not ok:
        hint = ""
        if any(m == "pyspark" or m.startswith("pyspark.") for m in modules):
            hint = f" (from pyspark import only {', '.join(sorted(PYSPARK_NAMES))})"
        return [f"{text} is not an allowed import{hint}"]
    problems = []
    for part in (p for m in modules if m != "__future__" for p in m.split(".")):
        why = "a private module" if part.startswith("_") else _banned(part)
        if why:
            problems.append(f"{text} imports {part}: {why}")
    for name in names:
        why = _attr_problem(name)
        if why:
            problems.append(f"{text} imports {name}: {why}")
    return problems


def _is_constant(node: ast.expr) -> bool:
    """A default value that runs nothing: a constant, -1, a name, a.b, or a tuple of these."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant)
    if isinstance(node, ast.Tuple):
        return all(_is_constant(e) for e in node.elts)
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, (ast.Constant, ast.Name))


def _runs_code(node: ast.AST) -> bool:
    return any(isinstance(n, _RUNS_CODE) for n in ast.walk(node))


def _check_functions(tree: ast.Module) -> list[str]:
    """Decorators (none anywhere), default values (constants only: they are evaluated when the
    `def` runs, at import for module-level functions) and annotations (no calls: without
    `from __future__ import annotations` they are evaluated then too)."""
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for dec in node.decorator_list:
                problems.append(
                    f"line {dec.lineno}: decorators are not allowed "
                    f"(@{ast.unparse(dec)} on {node.name})"
                )
        if isinstance(node, ast.AnnAssign) and _runs_code(node.annotation):
            problems.append(
                f"line {node.lineno}: the annotation of {ast.unparse(node.target)} runs code "
                f"({ast.unparse(node.annotation)}); annotations may only name types"
            )
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        where = "a lambda" if isinstance(node, ast.Lambda) else f"{node.name}()"
        a = node.args
        positional = [*a.posonlyargs, *a.args]
        defaults = zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True)
        keyword = ((arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d)
        for arg, default in (*defaults, *keyword):
            if not _is_constant(default):
                problems.append(
                    f"line {default.lineno}: the default value of {arg.arg} in {where} is not a "
                    f"constant ({ast.unparse(default)}); defaults are evaluated when the def "
                    "runs: use None, a number, a string or a name and compute the value inside"
                )
        if isinstance(node, ast.Lambda):
            continue
        args = [*positional, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
        annotated = [(f"the annotation of {x.arg}", x.annotation) for x in args]
        annotated.append(("the return annotation", node.returns))
        for what, ann in annotated:
            if ann is not None and _runs_code(ann):
                problems.append(
                    f"line {ann.lineno}: {what} in {where} runs code ({ast.unparse(ann)}); "
                    "annotations may only name types"
                )
    return problems


def check_rules(model: str, source: str) -> list[str]:
    """Rule violations of the student file of `model` ("line N: ..."), empty when it may run."""
    rel = STUDENT_FILES[model]
    try:
        tree = ast.parse(source, rel)
    except SyntaxError as e:
        return [f"line {e.lineno}: syntax error: {e.msg}"]
    cls_name = models.get(model).student_class
    problems = _check_names(tree, cls_name, starter_imports(model))
    problems += _check_functions(tree)
    classes, module_problems = _check_module_level(tree, cls_name)
    problems += module_problems
    cls = classes.get(cls_name)
    if cls is None:
        problems.append(f"the class {cls_name} is missing (protected: keep the starter's class)")
        return problems
    return problems + _check_class(cls, protected_bases(model))


def _check_names(tree: ast.Module, cls_name: str, allowed_imports: set[str]) -> list[str]:
    """Imports, forbidden builtins, names and attributes, globals, and monkeypatching."""
    problems: list[str] = []
    imported_names: set[str] = set()
    called: set[int] = set()  # the Name nodes already reported as forbidden calls

    for node in ast.walk(tree):  # breadth first: a Call comes before its func Name
        line = getattr(node, "lineno", "?")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                imported_names.add((a.asname or a.name).split(".")[0])
            problems += [f"line {line}: {p}" for p in _import_problems(node, allowed_imports)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_BUILTINS:
                called.add(id(node.func))
                problems.append(f"line {line}: calls {node.func.id}(), which is not allowed")
        elif isinstance(node, ast.Name):
            if node.id.startswith("__") and node.id.endswith("__"):
                problems.append(f"line {line}: uses {node.id} (dunder names are not allowed)")
            elif node.id in FORBIDDEN_BUILTINS and id(node) not in called:
                problems.append(
                    f"line {line}: uses {node.id}, which is not allowed (not even as a value)"
                )
        elif isinstance(node, ast.Attribute):
            why = _attr_problem(node.attr)
            if why:
                problems.append(f"line {line}: uses .{node.attr}: {why}")
            elif node.attr in FORMAT_METHODS and (why := _format_problem(node)):
                problems.append(f"line {line}: {why}")
        elif isinstance(node, ast.MatchClass):  # `case C(attr=x)` reads C's attribute attr
            for attr in node.kwd_attrs:
                why = _attr_problem(attr)
                if why:
                    problems.append(f"line {line}: the pattern reads .{attr}: {why}")
        elif isinstance(node, ast.Global):
            problems.append(f"line {line}: global statements are not allowed")

    # assigning attributes of imported modules/classes (monkeypatching)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Attribute):
                    root = sub
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    if isinstance(root, ast.Name) and root.id in imported_names | {cls_name}:
                        problems.append(
                            f"line {node.lineno}: assigns {ast.unparse(sub)}, an attribute of "
                            "an imported module or class"
                        )
    return problems


def _check_module_level(
    tree: ast.Module, cls_name: str
) -> tuple[dict[str, ast.ClassDef], list[str]]:
    """Module level holds imports, helper functions, constants and the class; nothing that
    runs. Returns the classes by name and the problems."""
    problems: list[str] = []
    classes: dict[str, ast.ClassDef] = {}
    for i, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef)):
            continue  # decorators, defaults and annotations: _check_functions
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if isinstance(node, ast.ClassDef):
            classes[node.name] = node
            if node.name != cls_name:
                problems.append(f"line {node.lineno}: only the class {cls_name} may be defined")
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and not any(
            isinstance(n, _RUNS_CODE) for n in ast.walk(node)
        ):
            continue
        problems.append(
            f"line {node.lineno}: module-level code other than imports, functions, constants "
            f"and the class ({type(node).__name__})"
        )
    return classes, problems


def _check_class(cls: ast.ClassDef, bases: list[str]) -> list[str]:
    """The protected structure of the student class: its bases, forward() and backward()
    with SparkClassifier's parameters, nothing else (decorators: _check_functions)."""
    problems: list[str] = []
    name = cls.name
    if [ast.unparse(b) for b in cls.bases] != bases or cls.keywords:
        problems.append(
            f"line {cls.lineno}: {name} must keep the starter's base classes ({', '.join(bases)})"
        )
    ref_methods = protected_methods()
    seen = set()
    for j, node in enumerate(cls.body):
        if j == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.FunctionDef) and node.name in ref_methods and node.name not in seen:
            seen.add(node.name)
            ref = ref_methods[node.name]
            if _signature(node) != _signature(ref):
                problems.append(
                    f"line {node.lineno}: {name}.{node.name} must keep the starter's "
                    f"parameters ({ast.unparse(ref.args)})"
                )
            continue
        what = getattr(node, "name", type(node).__name__)
        problems.append(
            f"line {node.lineno}: {name} may define only {', '.join(ref_methods)}; "
            f"found {what} (write helpers as functions inside the methods or at module level)"
        )
    for method in ref_methods:
        if method not in seen:
            problems.append(f"{name}.{method} is missing (protected: keep the starter's methods)")
    return problems
