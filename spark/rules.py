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
  name and base classes, forward() and backward() with the same parameters and no decorators,
  and nothing else in the class. Module-level helper functions and constants are fine;
  module-level code that runs anything (calls) is not.
- Imports only from: numpy, pyspark, functools, operator, itertools, math, collections,
  typing, util.layer (`from util import layer`), spark.classifier, and the imports the
  starter file already has. Each file stands alone (no importing another step's file).
- No eval/exec/compile/open/__import__/getattr/setattr/delattr/globals/locals/vars/
  breakpoint/input/exit, no global statements, no dunder attributes (x.__dict__, ...), no
  assigning attributes of imported modules or classes, and none of the matrix version's
  training methods (gradients, loss_and_grads, train, step, predict, validate, accuracy_on,
  prepare): the Spark version has to compute its gradients itself.
"""

ALLOWED_MODULES = (
    "numpy",
    "pyspark",
    "functools",
    "operator",
    "itertools",
    "math",
    "collections",
    "typing",
    "__future__",
    "util.layer",
    "spark.classifier",
)
ALLOWED_FROM = {"util": {"layer"}, "util.network": {"Params"}}
# the imports every starter file has (each file also imports its matrix class: starter_imports)
STARTER_IMPORTS = (
    "from __future__ import annotations",
    "from pyspark import RDD, Broadcast",
    "from spark.classifier import Result, SparkClassifier, add_results",
    "from util import layer",
)
FORBIDDEN_CALLS = {
    "eval",
    "exec",
    "compile",
    "open",
    "__import__",
    "getattr",
    "setattr",
    "delattr",
    "globals",
    "locals",
    "vars",
    "breakpoint",
    "input",
    "exit",
    "quit",
    "memoryview",
}
FORBIDDEN_ATTRS = {
    "gradients",
    "loss_and_grads",
    "train",
    "step",
    "predict",
    "validate",
    "accuracy_on",
    "prepare",
}
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


def check_rules(model: str, source: str) -> list[str]:
    """Rule violations of the student file of `model` ("line N: ..."), empty when it may run."""
    rel = STUDENT_FILES[model]
    try:
        tree = ast.parse(source, rel)
    except SyntaxError as e:
        return [f"line {e.lineno}: syntax error: {e.msg}"]
    cls_name = models.get(model).student_class
    problems = _check_names(tree, cls_name, starter_imports(model))
    classes, module_problems = _check_module_level(tree, cls_name)
    problems += module_problems
    cls = classes.get(cls_name)
    if cls is None:
        problems.append(f"the class {cls_name} is missing (protected: keep the starter's class)")
        return problems
    return problems + _check_class(cls, protected_bases(model))


def _check_names(tree: ast.Module, cls_name: str, allowed_imports: set[str]) -> list[str]:
    """Imports, forbidden calls and attributes, globals, and monkeypatching."""
    problems: list[str] = []
    imported_names: set[str] = set()

    def import_ok(node: ast.Import | ast.ImportFrom) -> bool:
        if ast.unparse(node) in allowed_imports:
            return True
        if isinstance(node, ast.Import):
            return all(_module_ok(a.name) for a in node.names)
        if node.level:
            return False
        mod = node.module or ""
        if _module_ok(mod):
            return True
        return mod in ALLOWED_FROM and all(a.name in ALLOWED_FROM[mod] for a in node.names)

    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                imported_names.add((a.asname or a.name).split(".")[0])
            if not import_ok(node):
                problems.append(f"line {line}: `{ast.unparse(node)}` is not an allowed import")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                problems.append(f"line {line}: calls {node.func.id}(), which is not allowed")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__") and node.attr.endswith("__"):
                problems.append(f"line {line}: uses the dunder attribute .{node.attr}")
            elif node.attr in FORBIDDEN_ATTRS:
                problems.append(
                    f"line {line}: uses .{node.attr}, part of the matrix version's training; "
                    "compute the gradients with the util.layer functions instead"
                )
        elif isinstance(node, ast.Name) and node.id in ("__builtins__", "__loader__", "__spec__"):
            problems.append(f"line {line}: uses {node.id}")
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
            if isinstance(node, ast.FunctionDef) and node.decorator_list:
                problems.append(f"line {node.lineno}: module-level functions take no decorators")
            continue
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
    with SparkClassifier's parameters and no decorators, nothing else."""
    problems: list[str] = []
    name = cls.name
    if [ast.unparse(b) for b in cls.bases] != bases or cls.keywords:
        problems.append(
            f"line {cls.lineno}: {name} must keep the starter's base classes ({', '.join(bases)})"
        )
    if cls.decorator_list:
        problems.append(f"line {cls.lineno}: {name} takes no decorators")
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
            if node.decorator_list:
                problems.append(f"line {node.lineno}: {name}.{node.name} takes no decorators")
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
