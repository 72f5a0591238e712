# Procord for Swift: build, demo and tests.
#
#   make demo    install what is missing, build, run the showcase
#   make test    install what is missing, build, run every test (C, C under
#                ASan/UBSan, then Swift)
#   make build   build everything (debug)
#   make check-c compile the C core with every warning as an error
#   make clean   remove build products

SWIFT ?= swift
CC ?= cc
BUILD_DIR ?= .build
# Debian packages: libevent for the C core; for the server tests also nginx
# with its stream module and systemd's socket activation tool.
APT_PACKAGES = libevent-dev pkg-config
APT_TEST_PACKAGES = nginx-light libnginx-mod-stream systemd
CFLAGS_CORE = -std=c11 -O2 -g -Wall -Wextra -Werror -Iinclude
LIBS_CORE = $(shell pkg-config --libs libevent_core 2>/dev/null || echo -levent_core) -lpthread
C_SOURCES = $(wildcard Sources/CProcord/*.c)
C_TESTS = $(patsubst Tests/c/%.c,$(BUILD_DIR)/c-tests/%,$(wildcard Tests/c/test_*.c))
C_TESTS_SANITIZED = $(patsubst Tests/c/%.c,$(BUILD_DIR)/c-tests-sanitized/%,$(wildcard Tests/c/test_*.c))
# AddressSanitizer (with leak checking) and UndefinedBehaviorSanitizer, from
# the clang that comes with Swift.
SANITIZE_CC ?= $(shell command -v clang 2>/dev/null || echo /opt/swift/usr/bin/clang)
SANITIZE_FLAGS = -std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
                 -fno-sanitize-recover=undefined -Iinclude -ISources/CProcord
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps test-deps build demo test test-c test-c-sanitized test-swift check-c clean

all: build

# Installs the Debian packages that are missing (apt-get update once, first).
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

deps:
	$(call install_missing,$(APT_PACKAGES))

test-deps: deps
	$(call install_missing,$(APT_TEST_PACKAGES))

build: deps
	$(SWIFT) build

demo: build
	$(BUILD_DIR)/debug/procord-demo

check-c: deps
	@mkdir -p $(BUILD_DIR)/c-check
	@for f in $(C_SOURCES); do \
	  $(CC) $(CFLAGS_CORE) -c $$f -o $(BUILD_DIR)/c-check/$$(basename $$f .c).o || exit 1; done
	@echo "C core compiles cleanly with -Wall -Wextra -Werror"

$(BUILD_DIR)/c-tests/%: Tests/c/%.c Tests/c/check.h Tests/c/fixtures.h $(C_SOURCES) $(wildcard include/procord/*.h Sources/CProcord/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CORE) -ISources/CProcord -o $@ $< $(C_SOURCES) $(LIBS_CORE)

test-c: deps check-c $(C_TESTS)
	@for t in $(C_TESTS); do echo "== $$t"; $$t || exit 1; done

$(BUILD_DIR)/c-tests-sanitized/%: Tests/c/%.c Tests/c/check.h Tests/c/fixtures.h $(C_SOURCES) $(wildcard include/procord/*.h Sources/CProcord/*.h)
	@mkdir -p $(dir $@)
	$(SANITIZE_CC) $(SANITIZE_FLAGS) -o $@ $< $(C_SOURCES) $(LIBS_CORE)

# The same C tests under the sanitizers; any report fails the run.
test-c-sanitized: deps $(C_TESTS_SANITIZED)
	@for t in $(C_TESTS_SANITIZED); do echo "== $$t"; \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 $$t || exit 1; done

# Swift Testing only (there are no XCTest cases), one test at a time: tests
# count this process's descriptors and children, which parallel tests would
# disturb.
test-swift: test-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --disable-xctest --no-parallel

test: test-c test-c-sanitized test-swift

clean:
	rm -rf $(BUILD_DIR)
