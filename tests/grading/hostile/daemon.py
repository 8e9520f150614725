"""Leave a plain daemon behind: a forked child in a session of its own that sleeps 600 s.

target: nn
base: solution
where: import
rules: off
score: 30
"""

import os
import time

if os.fork() == 0:
    os.setsid()
    try:
        time.sleep(600)
    finally:
        os._exit(0)
