"""What a network device can do with XDP, from the kernel's netdev generic
netlink family (kernel 6.3+: the `xdp-features` each driver declares).

iproute2 6.1 (Debian 12) does not print these, so nexusctl asks the kernel
directly: one generic netlink socket, created in the interface's network
namespace (a short-lived thread joins it with setns, which changes only that
thread), a CTRL_CMD_GETFAMILY for "netdev", then a NETDEV_CMD_DEV_GET dump.
Read-only: nothing is attached to find out.
"""
from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading

from nexusctl.tools.runner import netns_path

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
CLONE_NEWNET = 0x40000000

NETDEV_FAMILY = "netdev"
NETDEV_CMD_DEV_GET = 1
NETDEV_A_DEV_IFINDEX = 1
NETDEV_A_DEV_XDP_FEATURES = 3
# enum netdev_xdp_act (include/uapi/linux/netdev.h)
XDP_ACT = {1: "basic", 2: "redirect", 4: "ndo-xmit", 8: "xsk-zerocopy", 16: "hw-offload", 32: "rx-sg",
           64: "ndo-xmit-sg"}
RECV_SIZE = 65536
TIMEOUT_S = 2.0


class NetlinkError(OSError):
    pass


def _attr(atype: int, payload: bytes) -> bytes:
    a = struct.pack("<HH", 4 + len(payload), atype) + payload
    return a + b"\0" * (-len(a) % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    out, off = {}, 0
    while off + 4 <= len(data):
        length, atype = struct.unpack_from("<HH", data, off)
        if length < 4:
            break
        out[atype & 0x3FFF] = data[off + 4: off + length]
        off += (length + 3) & ~3
    return out


def _request(sock: socket.socket, family: int, cmd: int, flags: int, attrs: bytes, seq: int) -> list[dict[int, bytes]]:
    body = struct.pack("<BBH", cmd, 1, 0) + attrs
    sock.send(struct.pack("<IHHII", 16 + len(body), family, NLM_F_REQUEST | flags, seq, 0) + body)
    replies = []
    while True:
        data = sock.recv(RECV_SIZE)
        off = 0
        while off + 16 <= len(data):
            length, mtype, _, mseq, _ = struct.unpack_from("<IHHII", data, off)
            if length < 16:
                return replies
            msg = data[off + 16: off + length]
            off += (length + 3) & ~3
            if mseq != seq:
                continue
            if mtype == NLMSG_DONE:
                return replies
            if mtype == NLMSG_ERROR:
                err = -struct.unpack_from("<i", msg, 0)[0]
                if err:
                    raise NetlinkError(err, os.strerror(err))
                return replies
            replies.append(_attrs(msg[4:]))          # past the genlmsghdr
        if not flags & NLM_F_DUMP:
            return replies


def _xdp_features_here() -> dict[int, int]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC) as s:
        s.settimeout(TIMEOUT_S)
        s.bind((0, 0))
        fam = _request(s, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 0,
                       _attr(CTRL_ATTR_FAMILY_NAME, NETDEV_FAMILY.encode() + b"\0"), 1)
        if not fam or CTRL_ATTR_FAMILY_ID not in fam[0]:
            raise NetlinkError(2, "no netdev netlink family")
        fid = struct.unpack("<H", fam[0][CTRL_ATTR_FAMILY_ID][:2])[0]
        out = {}
        for dev in _request(s, fid, NETDEV_CMD_DEV_GET, NLM_F_DUMP, b"", 2):
            if NETDEV_A_DEV_IFINDEX in dev and NETDEV_A_DEV_XDP_FEATURES in dev:
                idx = struct.unpack("<I", dev[NETDEV_A_DEV_IFINDEX][:4])[0]
                out[idx] = struct.unpack("<Q", dev[NETDEV_A_DEV_XDP_FEATURES][:8].ljust(8, b"\0"))[0]
        return out


def xdp_features(netns: str | None = None) -> dict[int, int]:
    """{ifindex: xdp-features bitmask} of every device in netns (None: ours).
    Raises NetlinkError when the kernel has no netdev family (before 6.3)."""
    if not netns:
        return _xdp_features_here()
    result: dict = {}

    def worker():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns_path(netns), os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise NetlinkError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = _xdp_features_here()
        except OSError as e:
            result["error"] = e

    t = threading.Thread(target=worker, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join(TIMEOUT_S * 3)
    if "error" in result:
        raise result["error"]
    if "value" not in result:
        raise NetlinkError(110, f"no answer from the netdev family in {netns}")
    return result["value"]


def feature_names(mask: int) -> list[str]:
    return [name for bit, name in XDP_ACT.items() if mask & bit]
