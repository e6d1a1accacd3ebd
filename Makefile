# nexus: eBPF DNS security and TLS observability.
# Every target that touches the kernel is a thin call of nexusctl.
VENV      ?= .venv
NEXUSCTL  := $(VENV)/bin/nexusctl
PYTEST    := $(VENV)/bin/pytest
CONFIG    ?=
CFG_ARG   := $(if $(CONFIG),-c $(CONFIG),)
PYTEST_ARGS ?=

.PHONY: all setup test unit demo bench fuzz soak clean install uninstall load unload verify btf lint

all: setup
	$(NEXUSCTL) $(CFG_ARG) build

setup:
	@scripts/setup.sh

test: setup
	$(PYTEST) -q $(PYTEST_ARGS)

unit: setup
	$(PYTEST) -q tests/unit $(PYTEST_ARGS)

demo: setup
	@scripts/demo.sh

bench: setup
	$(VENV)/bin/python scripts/bench.py $(BENCH_ARGS)

fuzz: setup
	NEXUS_FUZZ_EXAMPLES=50000 $(PYTEST) -q tests/kernel -k fuzz $(PYTEST_ARGS)

soak: setup
	$(VENV)/bin/python scripts/soak.py $(SOAK_ARGS)

# ---- the seed's targets, for operators who know them ----
load: setup
	$(NEXUSCTL) $(CFG_ARG) up

unload: setup
	$(NEXUSCTL) $(CFG_ARG) down

verify: setup
	$(NEXUSCTL) $(CFG_ARG) verify

btf: setup
	$(NEXUSCTL) $(CFG_ARG) build --vmlinux-only

install: setup
	install -d /usr/local/bin /etc/nexus
	ln -sf $(abspath $(NEXUSCTL)) /usr/local/bin/nexusctl
	[ -e /etc/nexus/nexus.yaml ] || install -m 0644 configs/nexus.yaml /etc/nexus/nexus.yaml

uninstall:
	rm -f /usr/local/bin/nexusctl

clean:
	rm -rf build .pytest_cache
