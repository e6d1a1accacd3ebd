"""A real TLS server (openssl s_server on loopback) presenting a certificate,
and real OpenSSL clients (openssl s_client, python's ssl) connecting to it.
Every process started here is waited for or killed by the context manager."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

WEAK_OK = "DEFAULT:@SECLEVEL=0"         # Debian's default level 2 refuses RSA-1024 keys
START_TIMEOUT = 15


@contextmanager
def tls_server(files: dict[str, Path], accepts: int = 1, weak: bool = False):
    """openssl s_server -www on 127.0.0.1 (a free port); yields the port."""
    argv = ["openssl", "s_server", "-www", "-accept", "127.0.0.1:0", "-naccept", str(accepts),
            "-cert", str(files["cert"]), "-key", str(files["key"])]
    if files.get("chain") and files["chain"].exists() and files["chain"].stat().st_size:
        argv += ["-cert_chain", str(files["chain"])]
    if weak:
        argv += ["-cipher", WEAK_OK]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        deadline = time.monotonic() + START_TIMEOUT
        seen = []
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.match(r"ACCEPT .*:(\d+)\s*$", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            raise RuntimeError(f"s_server did not start: {''.join(seen)}")
        yield port
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        for s in (p.stdin, p.stdout):
            s.close()


def openssl_client(port: int, sni: str | None, weak: bool = False, timeout: float = 20) -> subprocess.CompletedProcess:
    """openssl s_client: handshake, then EOF on stdin closes the connection. Returns the
    finished process (returncode -9 when it was killed), with .pid set."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"]
    argv += ["-servername", sni] if sni else ["-noservername"]
    if weak:
        argv += ["-cipher", WEAK_OK]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    res = subprocess.CompletedProcess(argv, p.returncode, out, "")
    res.pid = p.pid
    return res


PY_CLIENT = r"""
import socket, ssl, sys
port, sni, times = int(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3])
ctx = ssl.create_default_context()          # loads the system CA bundle: not a peer certificate
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for _ in range(times):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while s.recv(4096):
                pass
print("ok")
"""


def python_client(port: int, sni: str | None, times: int = 1, timeout: float = 30) -> subprocess.CompletedProcess:
    """Python's ssl module (SSL_do_handshake, SSL_read_ex/SSL_write_ex), `times` connections in one process."""
    p = subprocess.Popen([sys.executable, "-c", PY_CLIENT, str(port), sni or "", str(times)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    res = subprocess.CompletedProcess(p.args, p.returncode, out, "")
    res.pid = p.pid
    return res
