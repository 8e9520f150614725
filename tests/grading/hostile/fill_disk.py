"""Fill the disk: 3 GB in $TMPDIR (files as large as the system lets one grow), and files in
every world-writable directory (/tmp, /var/tmp, /dev/shm), which would outlive the step.

target: cnn
base: starter
where: import
rules: off
score: 0
"""

import os

from common import attempt, report, write_file

MB = b"\0" * 2**20
largest, total, stopped = 0, 0, ""
for i in range(3):
    path = os.path.join(os.environ["TMPDIR"], f"fill-{i}")
    with open(path, "wb", buffering=0) as f:
        try:
            while total < 3 * 2**30 and f.tell() < 2**31 + 2**20:
                total += f.write(MB)
        except OSError as e:
            stopped = os.strerror(e.errno or 0)
        largest = max(largest, os.path.getsize(path))
    if total >= 3 * 2**30:
        break
outside = []
for d in ("/tmp", "/var/tmp", "/dev/shm"):
    path = f"{d}/sparknet-hostile-fill_disk"
    if attempt(write_file, path, "HOSTILE fill_disk\n") == "ok":
        outside.append(path)
report(
    "fill_disk",
    tmpdir=os.environ["TMPDIR"],
    total=total,
    largest=largest,
    stopped=stopped,
    outside=outside,
)
