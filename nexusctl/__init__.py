"""nexusctl: eBPF DNS security and TLS observability, driven from YAML."""
import os as _os

__version__ = "0.1.0"

# nexusctl uses no pydantic plugins; skipping their discovery (a scan of every
# installed package's metadata) saves tens of milliseconds per command.
_os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
