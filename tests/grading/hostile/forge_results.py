"""Forge results.json at import: write a 100-point results.json wherever one can be found.

Every candidate ROOT/results/results.json (and summary.txt) is written directly, replaced
by a file made in the scratch directory (os.replace), and its directory chmod-ed.

target: nn
base: starter
where: import
rules: off
score: 0
"""

import json
import os

from common import attempt, grader_roots, report, write_file

FORGED = json.dumps(
    {
        "score": 100.0,
        "output": "HOSTILE forged results",
        "tests": [{"name": "HOSTILE forged", "score": 100.0, "max_score": 100.0}],
    }
)
tried, done = [], []
for root in grader_roots():
    for path in (f"{root}/results/results.json", f"{root}/results/summary.txt"):
        own = os.path.join(os.getcwd(), "forged.json")
        write_file(own, FORGED)
        for how, fn, args in (
            ("write", write_file, (path, FORGED)),
            ("replace", os.replace, (own, path)),
            ("chmod", os.chmod, (os.path.dirname(path), 0o777)),
        ):
            tried.append(how)
            if attempt(fn, *args) == "ok":
                done.append(f"{how} {path}")
report("forge_results", roots=grader_roots(), tried=len(tried), done=done)
