"""Features: each module says which BPF objects it needs for a config, how
big their maps are, what to write into config maps, which links to create,
what doctor should probe, and any extra plan steps. The planner, status and
doctor only iterate over FEATURES; adding a feature is adding a module here.

A feature module may define (all optional except OBJECTS):
  OBJECTS: list[ObjectSpec]
  map_sizes(cfg) -> dict[map name, max_entries]
  config_writes(cfg) -> list[ConfigWrite]
  links(cfg) -> list[LinkSpec]                 (nexusctl.engine.links)
  extra_actions(cfg, state) -> list[Action]    (run after loads and attachments)
  doctor_checks(app) -> list[dict]             (nexusctl.ops.doctor.check(...) rows)
  status_fields(app, state) -> dict            (merged into `status`; "notes": human lines)
  MAP_KEY_ENUMS: dict[map name, enum name]     (arrays indexed by an enum: shown by name, migrated by name)

An extra action takes part in `apply`'s plan against the live host like the
engine's own: satisfied(ctx) compares desired with live (and may set
self.reason), diff(ctx) returns {field: [live, wanted]} for `--diff`, and
`apply --check` lists it as planned. Set action.iface to an interface key
("netns/name") to make a failure count against that interface only.
Map layouts need nothing from a feature: a map whose definition or BTF changed
is migrated (or recreated with a warning) before the objects load.
"""
from __future__ import annotations

import importlib

from nexusctl.features.base import ConfigWrite, ObjectSpec  # noqa: F401 (re-export)

# Order matters: objects load in this order, so maps shared by several
# features are created by the first one that declares them.
_NAMES = ["dns", "policy", "metrics", "cert", "enforce"]


def _load():
    mods = []
    for name in _NAMES:
        try:
            mods.append(importlib.import_module(f"nexusctl.features.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"nexusctl.features.{name}":
                raise
    return mods


FEATURES = _load()
