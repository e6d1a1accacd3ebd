"""Run inside a test cgroup/netns: try each send or connect, print what happened.

argv[1]: JSON list of {"kind": "udp" | "cudp" | "tcp", "addr": ADDRESS, "port": N}
  udp  - sendto on an unconnected UDP socket (cgroup sendmsg4/6)
  cudp - connect a UDP socket, then send (cgroup connect4/6)
  tcp  - non-blocking TCP connect (cgroup connect4/6): EINPROGRESS or ECONNREFUSED mean it was let through
stdout: JSON {"pid", "comm", "results": ["ok" or the errno name per case]}.
"""
import errno
import ipaddress
import json
import os
import socket
import sys

PASSED = {errno.EINPROGRESS, errno.ECONNREFUSED}


def one(case: dict) -> str:
    fam = socket.AF_INET6 if ipaddress.ip_address(case["addr"]).version == 6 else socket.AF_INET
    kind = case["kind"]
    s = socket.socket(fam, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    try:
        dest = (case["addr"], case["port"])
        if kind == "udp":
            s.sendto(b"\0" * 12, dest)
        elif kind == "cudp":
            s.connect(dest)
            s.send(b"\0" * 12)
        else:
            s.setblocking(False)
            rc = s.connect_ex(dest)
            if rc and rc not in PASSED:
                return errno.errorcode.get(rc, str(rc))
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()


with open("/proc/self/comm") as f:
    comm = f.read().strip()
print(json.dumps({"pid": os.getpid(), "comm": comm, "results": [one(c) for c in json.loads(sys.argv[1])]}))
