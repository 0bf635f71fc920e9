# endoedge: `make demo` and `make test` do all set-up on a fresh Debian 12 / Ubuntu 22.04+ machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Root runs apt-get directly; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Ultralytics is a test-time peer (AGPL-3.0): installed without its dependencies (it would pull
# opencv-python next to opencv-python-headless), never imported by endoedge itself.
ULTRALYTICS := ultralytics==8.4.190
STAMP := $(VENV)/.endoedge-installed
# Static TensorRT API check (tests/tensorrt/api) and Triton config validation: dev-time sources of truth,
# all --no-deps. tensorrt-stubs goes to its own folder: in site-packages its .pyi-only tensorrt/
# folder would make `import tensorrt` succeed as an empty namespace package. The lean 11.4 bindings
# (0.8 MB + 46 MB libs) import on CPU; tritonclient only provides model_config_pb2 (grpc not needed).
TRT_STUBS := tensorrt-stubs==10.13.0.35.1
TRT_LEAN := tensorrt_lean_cu12_bindings==11.4.0.106 tensorrt_lean_cu12_libs==11.4.0.106
# TensorRT for RTX 1.7 (real wheels, 89 MB libs): builds real engines on a CPU in the test suite
# (tests/tensorrt/test_rtx_build.py). No wheel for some platforms (e.g. aarch64): those tests skip.
TRT_RTX := tensorrt-rtx-cu12-libs==1.7.1.116 tensorrt-rtx-cu12-bindings==1.7.1.116
TRITONCLIENT := tritonclient==2.73.0

.PHONY: all demo test pytest lint typecheck bench clean venv system-deps

all: test

demo: $(STAMP)
	$(BIN)/endoedge demo --output demo_out

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory pytest

# pytest exits 5 when it collected no test: treat that as the failure it is.
pytest: $(STAMP)
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_detect.py

venv: $(STAMP)

# Debian/Ubuntu packages: GStreamer (capture pipeline; plugins-bad brings debugqroverlay and zbar for
# `endoedge latency`), what PyGObject<3.51 builds against, Xvfb + ximagesink for the display test, and
# chromium, which renders the `endoedge batch --html` report in its test (Ubuntu ships it as a snap
# only: when apt cannot install it, the rest is installed and that test skips with the reason).
APT_PACKAGES := python3-venv python3-dev git pkg-config gcc \
	gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 \
	libgirepository1.0-dev libcairo2-dev xvfb gstreamer1.0-x chromium

system-deps:
	@if ! command -v dpkg-query >/dev/null; then \
	  echo "not a Debian/Ubuntu system: install the equivalents of: $(APT_PACKAGES)"; exit 0; fi; \
	missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && { DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing \
	  || { echo "retrying without chromium (the HTML report test will skip)"; \
	       DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $${missing//chromium/}; }; }; \
	fi

$(STAMP): pyproject.toml Makefile
	$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[torch,gst,dev,denoise,eval,quant,ray]"
	$(BIN)/python -m pip install -q --no-deps "$(ULTRALYTICS)"
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/trt-api/stubs "$(TRT_STUBS)"
	$(BIN)/python -m pip install -q --no-deps $(TRT_LEAN) || echo "no TensorRT 11.4 lean wheel here: its live check will skip"
	$(BIN)/python -m pip install -q --no-deps $(TRT_RTX) || echo "no TensorRT for RTX wheel for this platform: its real-engine build tests will skip"
	$(BIN)/python -m pip install -q --no-deps "$(TRITONCLIENT)"
	touch $@

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
