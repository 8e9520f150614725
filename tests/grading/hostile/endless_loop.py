"""An endless loop at the start of forward(), in all three steps at once.

Each step's first check times out, its later checks are not run, and the whole grading
stays inside the time budget.

target: linear nn cnn
base: solution
where: forward
rules: on
score: 0
"""

while True:
    pass
