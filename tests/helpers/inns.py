"""Run nexusctl in a private mount namespace with parts of the host taken away.

    unshare --mount --propagation private python tests/helpers/inns.py \\
        [--umount PATH]... [--hide PATH]... [--ro-bind PATH]... -- NEXUSCTL ARGS...

--umount PATH   unmount everything mounted at PATH (e.g. /sys/fs/bpf: bpffs gone)
--hide PATH     bind /dev/null over PATH (a tool that is not installed: not executable)
--ro-bind PATH  make PATH read-only

The mount namespace is private (unshare --propagation private), so nothing of
this is seen outside it and it all goes away with the process.
"""
from __future__ import annotations

import os
import subprocess
import sys


def main(argv: list[str]) -> None:
    if "--" not in argv:
        sys.exit("usage: inns.py [--umount P] [--hide P] [--ro-bind P] -- NEXUSCTL ARGS")
    cut = argv.index("--")
    opts, rest = argv[:cut], argv[cut + 1:]
    for flag, path in zip(opts[::2], opts[1::2]):
        if flag == "--umount":
            for _ in range(8):                           # stacked mounts: peel them all
                if not os.path.ismount(path):
                    break
                subprocess.run(["umount", "-l", path], check=True)
        elif flag == "--hide":
            subprocess.run(["mount", "--bind", "/dev/null", path], check=True)
        elif flag == "--ro-bind":
            subprocess.run(["mount", "--bind", path, path], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True)
        else:
            sys.exit(f"unknown option {flag}")
    os.execv(sys.executable, [sys.executable, "-m", "nexusctl", *rest])


if __name__ == "__main__":
    main(sys.argv[1:])
