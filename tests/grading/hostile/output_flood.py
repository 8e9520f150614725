"""Flood the grader with output: print 200 MB in every call of forward().

The code is otherwise correct, so it keeps its points; the output shown stays bounded.

target: cnn
base: solution
where: forward
rules: on
score: 50
"""

line = "HOSTILE flood " + "x" * (2**20 - 15)
for _ in range(200):
    print(line)
