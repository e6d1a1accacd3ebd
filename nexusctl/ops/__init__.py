"""The core: one function per command, returning data; the CLI renders it."""
