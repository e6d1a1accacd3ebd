"""nexusctl: eBPF DNS security and TLS observability, driven from YAML."""

__version__ = "0.1.0"
