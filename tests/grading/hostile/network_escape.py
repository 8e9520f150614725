"""Reach the network: TCP to public resolvers, a cloud metadata service and every address of
this machine, from the step's process.

target: nn
base: starter
where: import
rules: off
score: 0
"""

import socket

from common import report

targets = [("1.1.1.1", 53), ("8.8.8.8", 53), ("169.254.169.254", 80)]
try:
    for info in socket.getaddrinfo(socket.gethostname(), 22, socket.AF_INET):
        targets.append((info[4][0], 22))
except OSError:
    pass
connected = []
for host, port in targets:
    try:
        socket.create_connection((host, port), timeout=2).close()
        connected.append(f"{host}:{port}")
    except OSError:
        pass
with open("/proc/net/dev") as f:
    interfaces = [ln.split(":")[0].strip() for ln in f.readlines()[2:]]
report("network_escape", tried=len(targets), connected=connected, interfaces=interfaces)
