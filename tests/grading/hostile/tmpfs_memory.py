"""Use memory the watch cannot see: 2.5 GB of files in /dev/shm (tmpfs, held in RAM by the
kernel, in no process's resident set), above the step's 2 GB memory limit.

Where root may create mount namespaces (here), the sandbox gives submitted code a private
/dev/shm, a directory of its scratch space on disk: the files hold no memory and are
removed with the scratch, so the (solution) step keeps its points. Elsewhere the files are
counted against the memory limit (the step stops with "MEMORY") and removed after the step.

target: nn
base: solution
where: import
rules: off
score: 30
"""

MB = b"\1" * 2**20
for i in range(2):  # 1.25 GB each: below the file size limit
    with open(f"/dev/shm/sparknet-hostile-tmpfs-{i}", "wb") as f:
        for _ in range(1280):
            f.write(MB)
