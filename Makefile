# Procord for Swift: build, demo and tests.
#
#   make            build the C library (libprocord.a, libprocord.so) and the Swift package
#   make demo       install what is missing, build, run the showcase
#   make test       install what is missing, build, run every test (C, C under
#                   ASan/UBSan, the fuzz harnesses, the installed library and its
#                   examples, then Swift)
#   make build      build the Swift package (debug)
#   make lib        build libprocord.a and libprocord.so in .build/lib
#   make install    install the library, its headers and procord.pc under PREFIX
#                   (/usr/local by default; DESTDIR is honoured)
#   make examples   build the C examples (Examples/c) against .build/lib
#   make check-c    compile the C core and its headers with every warning as an error
#   make format     rewrite every C file with clang-format (.clang-format) and every
#                   Swift file with swift format (.swift-format)
#   make lint       check the formatting, changing nothing; fails naming each file not formatted
#   make bench      build procord-bench in release mode and run every scenario, with
#                   Python's pools as peers: the table, bench/results.json, bench/results.svg
#   make bench-static  the start-up scenarios again with a worker built with the
#                   static Swift standard library (.build-static)
#   make soak       MINUTES=N (10 by default): mixed load through pools and a worker server;
#                   every task's final status, memory, descriptors and processes left: bench/soak.json
#   make fuzz       build the libFuzzer harnesses (Tests/fuzz) and run each for SECONDS
#                   seconds (60 by default) on a copy of its corpus in .build/fuzz/corpus
#   make test-fuzz  replay each fuzz corpus, then run each harness for 5 s (part of make test)
#   make docs       build the DocC catalog (Sources/Procord/Procord.docc) with swift-docc-plugin;
#                   any warning fails it. The archive: .build/plugins/Swift-DocC/outputs/Procord.doccarchive;
#                   to read it in a browser: swift package --disable-sandbox preview-documentation --target Procord
#   make clean      remove build products

SWIFT ?= swift
CC ?= cc
CXX ?= c++
BUILD_DIR ?= .build
# Debian packages: libevent (with its evdns and OpenSSL bufferevents) and OpenSSL for
# the C core; for the server tests also nginx with its stream module,
# systemd's socket activation tool, and the openssl command (the security
# tests make their certificates with it).
APT_PACKAGES = libevent-dev libssl-dev pkg-config
APT_TEST_PACKAGES = nginx-light libnginx-mod-stream systemd openssl
# For make format and make lint: .clang-format is written for Debian's clang-format (14).
APT_LINT_PACKAGES = clang-format
CLANG_FORMAT ?= clang-format
CFLAGS_CORE = -std=c11 -O2 -g -Wall -Wextra -Werror -Iinclude -ISources/CProcord
# libevent's core, its evdns resolver (libevent_extra) and its OpenSSL
# bufferevents, and OpenSSL: each before those it uses, for static links.
PKG_MODULES = libevent_extra libevent_openssl libevent_core openssl
LIBS_CORE = $(shell pkg-config --libs $(PKG_MODULES) 2>/dev/null || \
              echo -levent_extra -levent_openssl -levent_core -lssl -lcrypto) -lpthread
# The C core, in folders by layer (docs/ARCHITECTURE.md).
C_SOURCES = $(wildcard Sources/CProcord/*/*.c)
C_PRIVATE_HEADERS = $(wildcard Sources/CProcord/*/*.h)
C_TEST_HEADERS = $(wildcard Tests/c/*.h)
C_TESTS = $(patsubst Tests/c/%.c,$(BUILD_DIR)/c-tests/%,$(wildcard Tests/c/test_*.c))
C_TESTS_SANITIZED = $(patsubst Tests/c/%.c,$(BUILD_DIR)/c-tests-sanitized/%,$(wildcard Tests/c/test_*.c))
# AddressSanitizer (with leak checking) and UndefinedBehaviorSanitizer, from
# the clang that comes with Swift.
SANITIZE_CC ?= $(shell command -v clang 2>/dev/null || echo /opt/swift/usr/bin/clang)
SANITIZE_FLAGS = -std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
                 -fno-sanitize-recover=undefined -Iinclude -ISources/CProcord
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The C library, for C programs: the same sources SwiftPM compiles.
# The version is written in one place, include/procord/version.h.
version_part = $(shell sed -n 's/^\#define PROCORD_VERSION_$(1) \([0-9][0-9]*\)$$/\1/p' include/procord/version.h)
VERSION := $(call version_part,MAJOR).$(call version_part,MINOR).$(call version_part,PATCH)
ifneq ($(words $(subst ., ,$(VERSION))),3)
  $(error could not read the version from include/procord/version.h (got '$(VERSION)'))
endif
# The ABI's number (the soname's): raised when a program built against an
# older header must be built again (a struct changed other than by growing at
# its end, a function removed or changed; scripts/c_api.py check-abi).
SOVERSION = 0
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
LIB_DIR = $(BUILD_DIR)/lib
LIB_OBJECTS = $(patsubst Sources/CProcord/%.c,$(LIB_DIR)/objects/%.o,$(C_SOURCES))
PUBLIC_HEADERS = $(wildcard include/procord/*.h)
C_EXAMPLES = $(patsubst Examples/c/%.c,$(BUILD_DIR)/examples/%,$(wildcard Examples/c/*.c))

.DELETE_ON_ERROR:

.PHONY: all deps install-deps test-deps build demo test check-layers test-c test-c-harness test-c-sanitized test-library \
        test-swift check-c check-headers lib install examples bench bench-static clean fuzz test-fuzz soak \
        format lint lint-deps install-lint-deps

all: lib build

# Installs the Debian packages that are missing (apt-get update once, first).
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

# Nothing to do where libevent is there already (any system, not only Debian).
deps:
	@pkg-config --exists $(PKG_MODULES) 2>/dev/null || \
	  $(MAKE) --no-print-directory install-deps

install-deps:
	$(call install_missing,$(APT_PACKAGES))

test-deps: deps
	$(call install_missing,$(APT_TEST_PACKAGES))

build: deps
	$(SWIFT) build

demo: build
	$(BUILD_DIR)/debug/procord-demo

# Every allocation of the core goes through memory.c, on the program's
# allocator (procord/memory.h): no other object calls libc's, but for the
# free() that contracts leave to libc (task.c: a serializer's bytes, a value
# without free_value; worker.c: a task's reply body).
LIBC_ALLOCATION = malloc|calloc|realloc|reallocarray|strdup|strndup|asprintf|vasprintf|posix_memalign|aligned_alloc|memalign|valloc|free

check-c: deps check-headers
	@mkdir -p $(BUILD_DIR)/c-check
	@rm -f $(BUILD_DIR)/c-check/*.o
	@for f in $(C_SOURCES); do \
	  $(CC) $(CFLAGS_CORE) -c $$f -o $(BUILD_DIR)/c-check/$$(basename $$f .c).o || exit 1; done
	@echo "C core compiles cleanly with -Wall -Wextra -Werror"
	@for o in $(BUILD_DIR)/c-check/*.o; do \
	  case $$(basename $$o) in memory.o) continue;; task.o|worker.o) libc=free;; *) libc=;; esac; \
	  used=$$(nm -u $$o | awk '{print $$NF}' | grep -xE '$(LIBC_ALLOCATION)' | grep -vx "$$libc" | tr '\n' ' '); \
	  [ -z "$$used" ] || { echo "$$o calls $$used: allocate with base_private.h's procord_allocate functions"; exit 1; }; done
	@echo "C core allocates through memory.c only"

# Formatting (docs/DEVELOPMENT.md): the file lists are in scripts/format.sh.
lint-deps:
	@command -v $(CLANG_FORMAT) >/dev/null 2>&1 || \
	  $(MAKE) --no-print-directory install-lint-deps

install-lint-deps:
	$(call install_missing,$(APT_LINT_PACKAGES))

format: lint-deps
	@CLANG_FORMAT=$(CLANG_FORMAT) SWIFT=$(SWIFT) scripts/format.sh format

lint: lint-deps
	@CLANG_FORMAT=$(CLANG_FORMAT) SWIFT=$(SWIFT) scripts/format.sh lint

# Each public header on its own, as C11 and as C++17, pedantic; every
# public function documented; every public struct grown only at its end
# since scripts/abi-structs.txt (scripts/c_api.py, after its self-test).
check-headers:
	@mkdir -p $(BUILD_DIR)/c-check
	@for h in $(PUBLIC_HEADERS); do \
	  echo "#include <procord/$$(basename $$h)>" > $(BUILD_DIR)/c-check/header.c; \
	  $(CC) -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude -fsyntax-only $(BUILD_DIR)/c-check/header.c || exit 1; \
	  $(CXX) -std=c++17 -Wall -Wextra -Werror -pedantic -Iinclude -fsyntax-only -x c++ $(BUILD_DIR)/c-check/header.c || exit 1; \
	done
	@python3 scripts/c_api.py check-docs
	@python3 scripts/c_api.py self-test
	@python3 scripts/c_api.py check-abi
	@echo "Public headers compile alone as C11 and C++17 with -Wall -Wextra -Werror -pedantic"

# ---- The C library ----

lib: deps $(LIB_DIR)/libprocord.a $(LIB_DIR)/libprocord.so

# Warnings are errors in check-c, not here: a newer compiler must not break a user's build.
# NDEBUG: the core's invariants (PROCORD_ASSERT) are checked in the tests' builds, not here.
CFLAGS_LIB = -std=c11 -O2 -g -DNDEBUG -Wall -Wextra -fPIC -Iinclude -ISources/CProcord $(CFLAGS) $(CPPFLAGS)

$(LIB_DIR)/objects/%.o: Sources/CProcord/%.c $(PUBLIC_HEADERS) $(C_PRIVATE_HEADERS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_LIB) $$(pkg-config --cflags $(PKG_MODULES)) -c $< -o $@

$(LIB_DIR)/libprocord.a: $(LIB_OBJECTS)
	rm -f $@
	ar rcs $@ $^

# Only the functions of the public headers are exported.
$(LIB_DIR)/procord.map: $(PUBLIC_HEADERS) scripts/c_api.py
	@mkdir -p $(dir $@)
	python3 scripts/c_api.py symbols > $@

# Linked, then checked: every function of the headers is defined and exported.
$(LIB_DIR)/libprocord.so.$(VERSION): $(LIB_OBJECTS) $(LIB_DIR)/procord.map
	$(CC) -shared -Wl,-soname,libprocord.so.$(SOVERSION) -Wl,--version-script=$(LIB_DIR)/procord.map \
	  -Wl,--no-undefined $(LDFLAGS) -o $@ $(LIB_OBJECTS) $(LIBS_CORE)
	python3 scripts/c_api.py check-exports $@

$(LIB_DIR)/libprocord.so: $(LIB_DIR)/libprocord.so.$(VERSION)
	ln -sf libprocord.so.$(VERSION) $(LIB_DIR)/libprocord.so.$(SOVERSION)
	ln -sf libprocord.so.$(VERSION) $@

# The pkg-config file names no run path for the system's directories: there
# the loader's cache must learn of the new library (ldconfig), or programs
# fail to start. Not into a staging DESTDIR.
INSTALL_NEEDS_LDCONFIG = $(if $(DESTDIR),,$(filter /usr/lib /usr/local/lib /usr/lib/%,$(LIBDIR)))

# procord.pc names the prefix: written at each install, for that prefix.
install: lib
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/procord
	install -m 644 $(LIB_DIR)/libprocord.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(LIB_DIR)/libprocord.so.$(VERSION) $(DESTDIR)$(LIBDIR)/
	ln -sf libprocord.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libprocord.so.$(SOVERSION)
	ln -sf libprocord.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libprocord.so
	install -m 644 $(PUBLIC_HEADERS) $(DESTDIR)$(INCLUDEDIR)/procord/
	@# Relative to the prefix when under it; a run path only outside the system's directories.
	libdir='$(LIBDIR)'; includedir='$(INCLUDEDIR)'; rpath=' -Wl,-rpath,$${libdir}'; \
	[ "$$libdir" = '$(PREFIX)/lib' ] && libdir='$${prefix}/lib'; \
	[ "$$includedir" = '$(PREFIX)/include' ] && includedir='$${prefix}/include'; \
	case '$(LIBDIR)' in /usr/lib|/usr/local/lib|/usr/lib/*) rpath='';; esac; \
	sed -e "s|@PREFIX@|$(PREFIX)|" -e "s|@LIBDIR@|$$libdir|" -e "s|@INCLUDEDIR@|$$includedir|" \
	    -e "s|@RPATH@|$$rpath|" -e "s|@VERSION@|$(VERSION)|" procord.pc.in \
	    > $(DESTDIR)$(LIBDIR)/pkgconfig/procord.pc
	$(if $(INSTALL_NEEDS_LDCONFIG),@if [ "$$(id -u)" = 0 ]; then ldconfig; \
	  else echo "Run 'sudo ldconfig' so that programs find libprocord.so in $(LIBDIR)."; fi)

examples: lib $(C_EXAMPLES)

$(BUILD_DIR)/examples/%: Examples/c/%.c Examples/c/fibo_task.h $(LIB_DIR)/libprocord.so
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror -Iinclude -o $@ $< -L$(LIB_DIR) -Wl,-rpath,$(abspath $(LIB_DIR)) -lprocord \
	  $$(pkg-config --cflags --libs libevent_core) # on_libevent.c runs its own base

# The library as a C user gets it: installed under a fresh prefix, a program
# outside the tree compiled with pkg-config alone, delegating to itself and
# to a demo server; and the examples.
test-library: lib examples build
	python3 Tests/c/test_library.py --demo $(BUILD_DIR)/debug/procord-demo --examples $(BUILD_DIR)/examples

# The core is compiled once for every test binary (and once more under the
# sanitizers), each test linking the objects.
C_TEST_OBJECTS = $(patsubst Sources/CProcord/%.c,$(BUILD_DIR)/c-tests/objects/%.o,$(C_SOURCES))
C_TEST_OBJECTS_SANITIZED = $(patsubst Sources/CProcord/%.c,$(BUILD_DIR)/c-tests-sanitized/objects/%.o,$(C_SOURCES))

# Kept between runs (make would delete them as intermediate files).
.SECONDARY: $(C_TEST_OBJECTS) $(C_TEST_OBJECTS_SANITIZED)

$(BUILD_DIR)/c-tests/objects/%.o: Sources/CProcord/%.c $(PUBLIC_HEADERS) $(C_PRIVATE_HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CORE) -c $< -o $@

$(BUILD_DIR)/c-tests-sanitized/objects/%.o: Sources/CProcord/%.c $(PUBLIC_HEADERS) $(C_PRIVATE_HEADERS)
	@mkdir -p $(dir $@)
	$(SANITIZE_CC) $(SANITIZE_FLAGS) -c $< -o $@

$(BUILD_DIR)/c-tests/%: Tests/c/%.c $(C_TEST_HEADERS) $(C_TEST_OBJECTS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_CORE) -o $@ $< $(C_TEST_OBJECTS) $(LIBS_CORE)

# Each binary within C_TEST_LIMIT seconds (each of its tests has a limit of
# its own, see Tests/c/check_runner.h); the harness's self-test first.
C_TEST_LIMIT ?= 300
RUN_C_TEST = timeout --kill-after=10 $(C_TEST_LIMIT)

test-c: deps check-c test-c-harness $(C_TESTS)
	@for t in $(C_TESTS); do echo "== $$t"; $(RUN_C_TEST) $$t || { echo "$$t failed or ran past $(C_TEST_LIMIT) s"; exit 1; }; done

# The harness itself: a test that hangs, one that leaves a child, one that
# leaves a descriptor, one whose CHECK fails with a worker running, one that
# crashes; each must fail by its own name within its limit, and the tests
# after it still run.
test-c-harness: $(BUILD_DIR)/c-tests/check_self_test
	python3 Tests/c/check_self_test.py $(BUILD_DIR)/c-tests/check_self_test

$(BUILD_DIR)/c-tests-sanitized/%: Tests/c/%.c $(C_TEST_HEADERS) $(C_TEST_OBJECTS_SANITIZED)
	@mkdir -p $(dir $@)
	$(SANITIZE_CC) $(SANITIZE_FLAGS) -o $@ $< $(C_TEST_OBJECTS_SANITIZED) $(LIBS_CORE)

# The same C tests under the sanitizers; any report fails the run.
test-c-sanitized: deps $(C_TESTS_SANITIZED)
	@for t in $(C_TESTS_SANITIZED); do echo "== $$t"; \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 $(RUN_C_TEST) $$t || \
	  { echo "$$t failed or ran past $(C_TEST_LIMIT) s"; exit 1; }; done

# Swift Testing only (there are no XCTest cases), one test at a time: tests
# count this process's descriptors and children, which parallel tests would
# disturb.
test-swift: test-deps
	$(SWIFT) build --build-tests
	@# What only the optimizer can break is checked against this one too.
	$(SWIFT) build -c release --product procord-demo
	$(SWIFT) test --skip-build --disable-xctest --no-parallel

# Mixed load through pools and a worker server for MINUTES minutes (10 by
# default; fractions work): every task's final status, memory, descriptors
# and processes left. Fails if any of them is off; the report is bench/soak.json.
MINUTES ?= 10
soak: deps
	$(SWIFT) build -c release --product procord-bench
	$(BUILD_DIR)/release/procord-bench soak --minutes $(MINUTES) --json bench/soak.json

# ---- Fuzzing (Tests/fuzz) ----

# libFuzzer harnesses under ASan and UBSan, with the clang of SANITIZE_CC: the
# core is compiled once with the fuzzer's coverage, and each harness links it.
FUZZ_HARNESSES = frame worker client auth
FUZZ_DIR = $(BUILD_DIR)/fuzz
FUZZ_BINARIES = $(patsubst %,$(FUZZ_DIR)/fuzz_%,$(FUZZ_HARNESSES))
FUZZ_OBJECTS = $(patsubst Sources/CProcord/%.c,$(FUZZ_DIR)/objects/%.o,$(C_SOURCES))
FUZZ_FLAGS = -std=c11 -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
             -Iinclude -ISources/CProcord
# lld when the compiler has one; gold warns about each sanitizer symbol it
# cannot export, so its warnings are filtered out (no binary: the build fails).
FUZZ_LINKER = $(if $(filter /%,$(shell $(SANITIZE_CC) -print-prog-name=ld.lld 2>/dev/null)),-fuse-ld=lld)
SECONDS ?= 60

$(FUZZ_DIR)/objects/%.o: Sources/CProcord/%.c $(PUBLIC_HEADERS) $(C_PRIVATE_HEADERS) | deps
	@mkdir -p $(dir $@)
	$(SANITIZE_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link,address,undefined \
	  $$(pkg-config --cflags $(PKG_MODULES)) -c $< -o $@

$(FUZZ_BINARIES): $(FUZZ_DIR)/fuzz_%: Tests/fuzz/fuzz_%.c Tests/fuzz/fuzz_support.h $(FUZZ_OBJECTS)
	@rm -f $@
	$(SANITIZE_CC) $(FUZZ_FLAGS) -Wall -Wextra -fsanitize=fuzzer,address,undefined $(FUZZ_LINKER) \
	  -o $@ $< $(FUZZ_OBJECTS) $(LIBS_CORE) 2>&1 | { grep -v 'Cannot export local symbol' >&2 || true; }
	@test -x $@

# New inputs go to the copy of each corpus in $(FUZZ_DIR)/corpus, findings to
# $(FUZZ_DIR)/artifacts; each harness's log is $(FUZZ_DIR)/HARNESS.log.
fuzz: deps $(FUZZ_BINARIES)
	@Tests/fuzz/run.sh fuzz $(FUZZ_DIR) $(SECONDS) $(FUZZ_HARNESSES)

# Every input of the corpora in the tree, then a few seconds of fuzzing each.
test-fuzz: deps $(FUZZ_BINARIES)
	@Tests/fuzz/run.sh replay $(FUZZ_DIR) $(FUZZ_HARNESSES)
	@Tests/fuzz/run.sh fuzz $(FUZZ_DIR) 5 $(FUZZ_HARNESSES)

test: check-layers test-c test-c-sanitized test-fuzz test-library test-swift

# The C core's layers (docs/ARCHITECTURE.md): every include and call goes
# down, no two files call each other; the check's self-test first (a wrong
# include and a cycle, planted in a copy, must be named).
check-layers:
	python3 scripts/check_layers.py --self-test
	python3 scripts/check_layers.py

# Speed is measured here, in release mode, not by the tests (which run the
# bench's --quick mode once, as a smoke test).
BENCH_RESULTS = bench/results
bench: deps
	$(SWIFT) build -c release --product procord-bench
	$(BUILD_DIR)/release/procord-bench --peers --json $(BENCH_RESULTS).json --svg $(BENCH_RESULTS).svg \
	  --markdown $(BENCH_RESULTS).md | tee $(BENCH_RESULTS).txt

# Process start dominates a one-off delegation: the same scenarios with a
# worker that links the Swift standard library statically.
STATIC_BUILD_DIR = .build-static
bench-static: deps
	$(SWIFT) build -c release --product procord-bench
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path $(STATIC_BUILD_DIR) --product procord-bench
	$(BUILD_DIR)/release/procord-bench spawn-rtt spawn-throughput memory \
	  --worker $(STATIC_BUILD_DIR)/release/procord-bench --json $(BENCH_RESULTS)-static.json \
	  --markdown $(BENCH_RESULTS)-static.md | tee $(BENCH_RESULTS)-static.txt

# The catalog and every doc comment of the Procord target, through
# swift-docc-plugin (a dependency of the package, used by no target). DocC's
# warnings are errors, and any other warning in the output (the symbol
# graph's build) fails it too.
DOCS_LOG = $(BUILD_DIR)/docs.log
.PHONY: docs
docs: deps
	@mkdir -p $(BUILD_DIR)
	@{ $(SWIFT) package generate-documentation --target Procord --warnings-as-errors; echo $$? > $(DOCS_LOG).status; } \
	  2>&1 | tee $(DOCS_LOG)
	@test "$$(cat $(DOCS_LOG).status)" = 0 && ! grep -q 'warning:' $(DOCS_LOG) || \
	  { echo "make docs: the documentation has errors or warnings (above; also in $(DOCS_LOG))"; exit 1; }

clean:
	rm -rf $(BUILD_DIR) $(STATIC_BUILD_DIR)
