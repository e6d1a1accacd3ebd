"""DNS policy rules: patterns, hashing (mirroring bpf/include/policy.h), rule
sources (config, runtime, imports), list formats, and the kernel rule sets."""
