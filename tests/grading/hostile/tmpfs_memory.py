"""Use memory the watch cannot see: 2.5 GB of files in /dev/shm (tmpfs, held in RAM by the
kernel, in no process's resident set), above the step's 2 GB memory limit.

A step whose processes use more than the limit is stopped with "MEMORY"; memory in tmpfs
is the submission's as much as its heap, and it outlives the step.

target: nn
base: solution
where: import
rules: off
score: 0
"""

MB = b"\1" * 2**20
for i in range(2):  # 1.25 GB each: below the file size limit
    with open(f"/dev/shm/sparknet-hostile-tmpfs-{i}", "wb") as f:
        for _ in range(1280):
            f.write(MB)
