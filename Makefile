# kiln — the two commands of README.md, and a few more.
#   make demo    install what is missing, build, run kiln's main job on examples/
#   make check   install what is missing, build, run every test (plus ASan+UBSan)
#   make fuzz    run every libFuzzer target (FUZZ_SECONDS each, default 600)

PYTHON      ?= /usr/bin/python3
BUILD       ?= build
BUILD_ASAN  ?= build-asan
BUILD_FUZZ  ?= build-fuzz
FUZZ_SECONDS ?= 600
KILN        := $(BUILD)/src/cli/kiln
STATE_DIR   ?= $(CURDIR)/var

.PHONY: all deps build demo check check-e2e test unit integration security asan lint fuzz fuzz-smoke bench clean format

all: build

deps:
	@./scripts/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: build
	@KILN=$(KILN) KILN_STATE_DIR=$(STATE_DIR) ./scripts/demo.sh

# Every test suite runs even when an earlier one fails; the target fails if any did.
check: build
	@./scripts/check.sh

# End to end: examples/live.json built twice from scratch (identical ISO
# SHA-256), booted in QEMU with BIOS and UEFI (waits for KILN-BOOT-OK on the
# serial console), a warm-store rebuild with an empty network namespace.
check-e2e: build
	KILN=$(CURDIR)/$(KILN) $(PYTHON) -m pytest -q -rfE -m heavy tests/image

unit: build
	meson test -C $(BUILD) --print-errorlogs

integration: build
	KILN=$(CURDIR)/$(KILN) $(PYTHON) -m pytest -q tests/integration

$(BUILD_ASAN)/build.ninja:
	meson setup $(BUILD_ASAN) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

asan: deps $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN)

lint:
	@./scripts/lint.sh

$(BUILD_FUZZ)/build.ninja:
	CC=clang meson setup $(BUILD_FUZZ) --buildtype=debugoptimized -Dfuzz=true -Dtests=false -Db_lundef=false

fuzz: deps $(BUILD_FUZZ)/build.ninja
	ninja -C $(BUILD_FUZZ)
	./scripts/fuzz.sh $(BUILD_FUZZ) $(FUZZ_SECONDS)

fuzz-smoke: deps $(BUILD_FUZZ)/build.ninja
	ninja -C $(BUILD_FUZZ)
	./scripts/fuzz.sh $(BUILD_FUZZ) 20

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
