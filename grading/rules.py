"""The static submission rules: `RULES` (the text students and staff read) and
`check_rules`, which parses a student file and names every violation. A teaching aid and a
first filter, not the security boundary."""

from __future__ import annotations

import ast

from grading import starter
from grading.submission import STUDENT_FILES, Submission
from util import models

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


def _signature(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    return [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [
        f"*{a.vararg.arg}" if a.vararg else "",
        f"**{a.kwarg.arg}" if a.kwarg else "",
    ]


def check_rules(model: str, source: str, starter_source: str) -> list[str]:
    """Rule violations of a student file ("line N: ..."), empty when it may run."""
    rel = STUDENT_FILES[model]
    try:
        tree = ast.parse(source, rel)
    except SyntaxError as e:
        return [f"line {e.lineno}: syntax error: {e.msg}"]
    ref = ast.parse(starter_source, rel)
    problems: list[str] = []
    cls_name = models.get(model).student_class

    # the starter's own imports stay allowed, whatever they are
    starter_imports = {
        ast.unparse(n) for n in ref.body if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    imported_names: set[str] = set()

    def import_ok(node: ast.Import | ast.ImportFrom) -> bool:
        if ast.unparse(node) in starter_imports:
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
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
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

    # module level: imports, helper functions, constants, the class; nothing that runs
    classes = {}
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
            isinstance(
                n,
                (
                    ast.Call,
                    ast.Lambda,
                    ast.ListComp,
                    ast.DictComp,
                    ast.SetComp,
                    ast.GeneratorExp,
                    ast.NamedExpr,
                    ast.Await,
                ),
            )
            for n in ast.walk(node)
        ):
            continue
        problems.append(
            f"line {node.lineno}: module-level code other than imports, functions, constants "
            f"and the class ({type(node).__name__})"
        )

    # the protected structure of the class, compared with the starter's
    ref_cls = next(n for n in ref.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    cls = classes.get(cls_name)
    if cls is None:
        problems.append(f"the class {cls_name} is missing (protected: keep the starter's class)")
        return problems
    if [ast.unparse(b) for b in cls.bases] != [
        ast.unparse(b) for b in ref_cls.bases
    ] or cls.keywords:
        problems.append(
            f"line {cls.lineno}: {cls_name} must keep the starter's base classes "
            f"({', '.join(ast.unparse(b) for b in ref_cls.bases)})"
        )
    if cls.decorator_list:
        problems.append(f"line {cls.lineno}: {cls_name} takes no decorators")
    ref_methods = {n.name: n for n in ref_cls.body if isinstance(n, ast.FunctionDef)}
    seen = set()
    for j, node in enumerate(cls.body):
        if j == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.FunctionDef) and node.name in ref_methods and node.name not in seen:
            seen.add(node.name)
            if _signature(node) != _signature(ref_methods[node.name]):
                problems.append(
                    f"line {node.lineno}: {cls_name}.{node.name} must keep the starter's "
                    f"parameters ({ast.unparse(ref_methods[node.name].args)})"
                )
            if node.decorator_list:
                problems.append(f"line {node.lineno}: {cls_name}.{node.name} takes no decorators")
            continue
        what = getattr(node, "name", type(node).__name__)
        problems.append(
            f"line {node.lineno}: {cls_name} may define only {', '.join(ref_methods)}; "
            f"found {what} (write helpers as functions inside the methods or at module level)"
        )
    for name in ref_methods:
        if name not in seen:
            problems.append(f"{cls_name}.{name} is missing (protected: keep the starter's methods)")
    return problems


def _module_ok(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in ALLOWED_MODULES)


def reject_rule_breakers(sub: Submission) -> None:
    """Records in sub.problems every student file that breaks the rules (it will not run)."""
    for model, rel in STUDENT_FILES.items():
        if model in sub.problems or rel not in sub.files:
            continue
        problems = check_rules(model, sub.files[rel], starter.starter_text(rel))
        if problems:
            sub.problems[model] = (
                f"{rel} breaks the submission rules, so it was not run:\n"
                + "\n".join(f"  {rel} {p}" for p in problems)
            )
