"""The application object every command gets: flags, consoles, runner, config."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from nexusctl.config import Config, load_config
from nexusctl.engine.actions import Ctx
from nexusctl.engine.state import Lock, State
from nexusctl.paths import default_config_path
from nexusctl.tools.runner import Runner


@dataclass
class App:
    config_path: Path | None = None
    json: bool = False
    dry_run: bool = False
    verbose: bool = False
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True))
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    runner: Runner | None = None
    _config: Config | None = None

    def __post_init__(self):
        if self.runner is None:
            self.runner = Runner(verbose=self.verbose, log=self._log_cmd)

    def _log_cmd(self, line: str) -> None:
        self.err.print(f"[dim]{line}[/dim]", markup=True, highlight=False, soft_wrap=True)

    @property
    def config_file(self) -> Path:
        return Path(self.config_path) if self.config_path else default_config_path()

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_file)
        return self._config

    @config.setter
    def config(self, cfg: Config) -> None:
        self._config = cfg

    def state(self) -> State:
        return State.load(self.config.state_dir)

    def lock(self) -> Lock:
        return Lock(self.config.state_dir)

    def ctx(self, state: State | None = None) -> Ctx:
        return Ctx(runner=self.runner, config=self.config, state=state or self.state())

    @property
    def interactive(self) -> bool:
        return not self.json and sys.stderr.isatty()

    def info(self, msg: str) -> None:
        """Human progress text: stderr, so --json stdout stays one document."""
        self.err.print(msg, highlight=False)

    def warn(self, msg: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {escape(msg)}", highlight=False)
