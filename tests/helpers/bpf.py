"""Load nexus objects into the kernel for BPF_PROG_TEST_RUN, with their maps
pinned in a private bpffs directory (so XDP and TC share them) that the
fixture removes afterwards."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from nexusctl.tools import libbpf as L
from nexusctl.tools.btf import Btf

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
XDP_VERDICTS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
TC_VERDICTS = {0: "TC_ACT_OK", 2: "TC_ACT_SHOT", -1: "TC_ACT_UNSPEC"}


class Loaded:
    """A set of objects loaded together, sharing maps pinned under pin_dir."""

    def __init__(self, names: list[str], pin_dir: Path, map_sizes: dict[str, int] | None = None):
        self.pin_dir = pin_dir
        (pin_dir / "maps").mkdir(parents=True, exist_ok=True)
        self.objs: dict[str, L.BpfObject] = {}
        self.btf = None
        for name in names:
            path = BUILD / f"{name}.o"
            obj = L.BpfObject(str(path))
            for mname, m in obj.user_maps():
                if map_sizes and mname in map_sizes:
                    obj.set_map_max_entries(m, map_sizes[mname])
                if not mname.endswith("_scratch"):
                    obj.set_map_pin_path(m, str(pin_dir / "maps" / mname))
            obj.load()
            self.objs[name] = obj
            if self.btf is None:
                self.btf = Btf.from_elf(path)

    def prog_fd(self, prog: str) -> int:
        for obj in self.objs.values():
            try:
                return obj.prog_fd(prog)
            except OSError:
                continue
        raise KeyError(prog)

    def run(self, prog: str, frame: bytes, repeat: int = 1) -> L.TestRun:
        return L.prog_test_run(self.prog_fd(prog), frame, repeat=repeat)

    def map(self, name: str) -> L.MapHandle:
        return L.MapHandle.pinned(str(self.pin_dir / "maps" / name))

    def counters(self) -> dict[str, int]:
        names = {v: n.removeprefix("NEXUS_CNT_").lower() for n, v in self.btf.enum("nexus_counter").items()}
        out = {}
        with self.map("nexus_counters") as m:
            for k, vals in m.items():
                i = int.from_bytes(k, "little")
                if i in names and not names[i].startswith("_"):
                    out[names[i]] = sum(int.from_bytes(v, "little") for v in vals)
        return out

    def set_config(self, **values) -> None:
        layout = self.btf.struct("nexus_config")
        with self.map("nexus_config") as m:
            cur = layout.unpack(m.lookup(b"\0" * 4))
            for k, v in values.items():
                cur[k] = v
            m.update(b"\0" * 4, layout.pack(cur))

    def close(self) -> None:
        for obj in self.objs.values():
            obj.close()
        self.objs.clear()
        shutil.rmtree(self.pin_dir, ignore_errors=True)


def private_pin_dir(tag: str) -> Path:
    """A bpffs directory only this test uses (bpffs refuses dots in names)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", tag)[:40]
    return Path("/sys/fs/bpf") / f"nexus-test-{safe}-{os.getpid()}"


def apply_config(lo: "Loaded", cfg_text: str = "") -> dict:
    """Write what `up` writes (nexus_config, nexus_dga) for a config given as YAML."""
    from nexusctl.config import load_config_text
    from nexusctl.features import dns as dns_feature
    cfg = load_config_text(cfg_text)
    values = dns_feature.config_values(cfg)
    lo.set_config(**values)
    from nexusctl import dga
    layout = lo.btf.struct("nexus_dga_table")
    with lo.map("nexus_dga") as m:
        m.update(b"\0" * 4, layout.pack(dga.table_values()))
    return values
