"""A Runner that runs nothing: scripted answers by argv prefix, every call recorded."""
from __future__ import annotations

from nexusctl.tools.runner import CmdResult, CommandFailed, Runner


class FakeRunner(Runner):
    def __init__(self, answers: dict[tuple, tuple[int, str, str]] | None = None, missing: set[str] = frozenset()):
        super().__init__(verbose=False)
        self.answers = answers or {}
        self.missing = set(missing)
        self.calls: list[list[str]] = []

    def which(self, tool: str) -> str:
        if tool in self.missing:
            return super().which("definitely-not-a-tool-" + tool) if False else self._missing(tool)
        return f"/usr/bin/{tool}"

    def _missing(self, tool):
        from nexusctl.errors import Unsupported
        from nexusctl.tools.runner import PACKAGES
        raise Unsupported(f"{tool} is not installed on this host",
                          f"install it with `apt-get install {PACKAGES.get(tool, tool)}` (or run `make setup`)")

    def run(self, argv, *, netns=None, check=True, timeout=None, input=None, env=None, quiet=False):
        argv = [str(a) for a in argv]
        self.which(argv[0])
        self.calls.append((["@" + netns] if netns else []) + argv)
        rc, out, err = 0, "", ""
        best = -1
        for prefix, ans in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix and len(prefix) > best:
                rc, out, err = ans
                best = len(prefix)
        res = CmdResult(argv, rc, out, err)
        if check and rc != 0:
            raise CommandFailed(res)
        return res
