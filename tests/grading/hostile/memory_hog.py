"""Allocate 20 GB in forward() (np.ones is allowed inside methods, so the rules pass it).

target: linear
base: solution
where: forward
rules: on
score: 0
"""

import numpy as np

hog = np.ones((20 * 2**30) // 8)
