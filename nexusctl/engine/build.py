"""Build actions: vmlinux.h from the running kernel's BTF, and one clang call
per bpf/*.c, redone only when the source, a header it includes (from clang's
depfile), vmlinux.h or the flags changed."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nexusctl.engine.actions import Action, Ctx
from nexusctl.errors import OperationFailed, Unsupported

KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
ARCH_DEFINES = {"x86_64": "x86", "aarch64": "arm64", "s390x": "s390", "ppc64le": "powerpc",
                "riscv64": "riscv", "armv7l": "arm"}


def clang_flags(src_dir: Path, build_dir: Path) -> list[str]:
    arch = ARCH_DEFINES.get(os.uname().machine, "x86")
    return ["-target", "bpf", "-g", "-O2", "-mcpu=v3", f"-D__TARGET_ARCH_{arch}",
            "-Wall", "-Wno-unused-function", "-Werror",
            "-I", str(src_dir / "include"), "-I", str(build_dir)]


def sources(src_dir: Path) -> list[Path]:
    return sorted(p for p in src_dir.glob("*.c"))


def object_path(build_dir: Path, name: str) -> Path:
    return build_dir / f"{name}.o"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class GenerateVmlinux(Action):
    kind = "vmlinux"

    def __init__(self, build_dir: Path):
        self.build_dir = build_dir
        self.out = build_dir / "vmlinux.h"
        self.stamp = build_dir / "vmlinux.h.btf-sha256"

    def describe(self) -> str:
        return f"bpftool btf dump file {KERNEL_BTF} format c > {self.out}"

    def _btf_sum(self) -> str:
        if not KERNEL_BTF.exists():
            raise Unsupported("this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing)",
                              "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's default kernels are)")
        return file_sha256(KERNEL_BTF)

    def satisfied(self, ctx: Ctx) -> bool:
        if not self.out.exists() or not self.stamp.exists():
            return False
        return self.stamp.read_text().strip() == self._btf_sum()

    def apply(self, ctx: Ctx) -> None:
        btf_sum = self._btf_sum()
        self.build_dir.mkdir(parents=True, exist_ok=True)
        res = ctx.runner.run(["bpftool", "btf", "dump", "file", str(KERNEL_BTF), "format", "c"], quiet=False)
        text = res.stdout
        if "struct xdp_md" not in text:
            raise OperationFailed("bpftool produced a vmlinux.h without struct xdp_md",
                                  "check that /sys/kernel/btf/vmlinux is this kernel's BTF")
        if not self.out.exists() or self.out.read_text() != text:
            tmp = self.out.with_suffix(".h.tmp")
            tmp.write_text(text)
            os.replace(tmp, self.out)
        self.stamp.write_text(btf_sum + "\n")


class Compile(Action):
    kind = "compile"

    def __init__(self, src: Path, build_dir: Path):
        self.src = src
        self.build_dir = build_dir
        self.name = src.stem
        self.obj = object_path(build_dir, self.name)
        self.dep = build_dir / f"{self.name}.d"
        self.flags_file = build_dir / f"{self.name}.flags"

    def argv(self) -> list[str]:
        return ["clang", *clang_flags(self.src.parent, self.build_dir), "-MD", "-MF", str(self.dep),
                "-c", str(self.src), "-o", str(self.obj)]

    def describe(self) -> str:
        return " ".join(self.argv())

    def _flags_text(self) -> str:
        return " ".join(clang_flags(self.src.parent, self.build_dir))

    def _deps(self) -> list[Path]:
        try:
            text = self.dep.read_text()
        except FileNotFoundError:
            return []
        body = text.split(":", 1)[1] if ":" in text else ""
        return [Path(p) for p in body.replace("\\\n", " ").split()]

    def satisfied(self, ctx: Ctx) -> bool:
        ok = self._up_to_date()
        if not ok:
            # Until it is compiled, plans that use the object cannot trust the old file
            # (a --check shows its load as planned); apply() clears the mark.
            ctx.cache.setdefault("stale_objects", set()).add(self.name)
        return ok

    def _up_to_date(self) -> bool:
        if not self.obj.exists() or not self.flags_file.exists():
            return False
        if self.flags_file.read_text().strip() != self._flags_text():
            return False
        built = self.obj.stat().st_mtime_ns
        deps = self._deps() or [self.src]
        for d in deps:
            try:
                if d.stat().st_mtime_ns > built:
                    return False
            except FileNotFoundError:
                return False
        return True

    def apply(self, ctx: Ctx) -> None:
        self.build_dir.mkdir(parents=True, exist_ok=True)
        tmp_obj = self.obj.with_suffix(".o.tmp")
        argv = self.argv()
        argv[-1] = str(tmp_obj)
        res = ctx.runner.run(argv, check=False, timeout=300)
        if res.rc != 0:
            lines = [ln for ln in res.stderr.splitlines() if "error" in ln]
            first = lines[0] if lines else (res.stderr.strip().splitlines() or ["clang failed"])[-1]
            raise OperationFailed(f"compiling {self.src.name} failed: {first}",
                                  "fix the C source; run with -v for clang's full output",
                                  details=res.stderr[-4000:])
        os.replace(tmp_obj, self.obj)
        self.flags_file.write_text(self._flags_text() + "\n")
        ctx.cache.get("stale_objects", set()).discard(self.name)


def plan_build(src_dir: Path, build_dir: Path, only: list[str] | None = None) -> list[Action]:
    actions: list[Action] = [GenerateVmlinux(build_dir)]
    for src in sources(src_dir):
        if only and src.stem not in only:
            continue
        actions.append(Compile(src, build_dir))
    return actions
