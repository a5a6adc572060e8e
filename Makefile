# CoreVital — build, test, run, bench.
#   make            ./corevital and build/libcorevital.a; with nvcc, the CUDA backend module
#                   build/libcorevital_cuda.so, copied beside ./corevital (loaded on demand)
#   make test       build and run the Check test suites (no GPU needed)
#   make test-asan  the same suites under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-avx512emu  the same suites on the AVX-512 kernels, their intrinsics emulated
#   make run        run the main job on the bundled tiny GPT-2
#   make bench      CPU benchmarks (bench/README.md)
#   make lint       clang-format (no diff) + cppcheck (zero findings)
#   make fuzz       libFuzzer harnesses (clang, ASan + UBSan), FUZZ_SECONDS each (tests/fuzz/)
#   make test-cuda  kernel-vs-CPU-twin and whole-model CUDA tests (needs a GPU)
# Options: NO_CUDA=1 forces a CPU-only build; SAN=1 builds with sanitizers; BUILD=dir.

CC      ?= gcc
BUILD   ?= build
PKGS    := libcjson libutf8proc yaml-0.1 libcurl zlib libcrypto sqlite3

# Install missing Debian -dev packages once, before anything is compiled.
ifeq ($(shell pkg-config --exists $(PKGS) check 2>/dev/null && echo ok),)
  $(info corevital: missing build dependencies, running scripts/install-deps.sh)
  DEPS_RC := $(shell sh scripts/install-deps.sh >&2; echo $$?)
  ifneq ($(DEPS_RC),0)
    $(error scripts/install-deps.sh failed; install: libcjson-dev libutf8proc-dev libyaml-dev libcurl4-openssl-dev zlib1g-dev libssl-dev libsqlite3-dev check pkg-config)
  endif
endif

OPT      ?= -O3 -march=native
ifeq ($(SAN),1)
  OPT      := -O1 -g -march=native -fno-omit-frame-pointer
endif
WARN     := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wvla
CFLAGS   := -std=c11 $(OPT) -fopenmp $(WARN) -Iinclude -Isrc $(shell pkg-config --cflags $(PKGS)) $(EXTRA_CFLAGS)
LDLIBS   := $(shell pkg-config --libs $(PKGS)) -lm
LDFLAGS  := -fopenmp $(EXTRA_LDFLAGS)
CHECK_CFLAGS := $(shell pkg-config --cflags check)
CHECK_LIBS   := $(shell pkg-config --libs check)

ifeq ($(SAN),1)
  CFLAGS   += -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDFLAGS  += -fsanitize=address,undefined
  NO_CUDA  := 1
endif

# CUDA: found on PATH or in the default toolkit location, unless NO_CUDA=1. The CUDA backend
# (kernels/*.cu) is a module, $(BUILD)/libcorevital_cuda.so, installed beside the binary and
# loaded with dlopen only when a run looks for a GPU (src/backend/cuda_loader.c): the binary and
# libcorevital.a link neither cudart nor cuBLAS. The module's references to the library (cv_fail,
# cv_log, ...) resolve against the executable, which therefore exports its cv_* symbols.
ifneq ($(NO_CUDA),1)
  NVCC := $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
endif
CUDA_ARCH ?= 90
CU_SRC    := $(wildcard kernels/*.cu)
LDLIBS    += -ldl
ifneq ($(NVCC),)
  CUDA_HOME   := $(patsubst %/bin/nvcc,%,$(NVCC))
  CFLAGS      += -DCV_HAVE_CUDA -I$(CUDA_HOME)/include
  # sm_90 machine code plus compute_90 PTX, so a newer GPU (or driver) can JIT the kernels
  NVCCFLAGS   := -O3 -std=c++17 \
                 -gencode arch=compute_$(CUDA_ARCH),code=[sm_$(CUDA_ARCH),compute_$(CUDA_ARCH)] \
                 -Iinclude -Isrc -Xcompiler -fPIC,-Wall -DCV_HAVE_CUDA
  CU_OBJ      := $(patsubst %.cu,$(BUILD)/obj/%.o,$(CU_SRC))
  CUDA_MODULE := $(BUILD)/libcorevital_cuda.so
  # the copy beside the binary that the loader finds (./libcorevital_cuda.so for ./corevital)
  CUDA_MODULE_INSTALL := $(if $(filter build,$(BUILD)),libcorevital_cuda.so)
  LDFLAGS     += '-Wl,--export-dynamic-symbol=cv_*'
  # binaries that call the CUDA runtime themselves (tests/cuda, bench_cuda) link the module and
  # cudart; $$ORIGIN-relative so the build folder can move
  CUDA_RT     := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart
else
  CU_OBJ      :=
  CUDA_MODULE :=
  CUDA_MODULE_INSTALL :=
endif

LIB_SRC := $(filter-out src/cli/main.c,$(wildcard src/*/*.c tokenizer/*.c))
LIB_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC))
LIB     := $(BUILD)/libcorevital.a
BIN     := corevital
ifneq ($(BUILD),build)
  BIN   := $(BUILD)/corevital
endif

TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_UTIL := $(wildcard tests/util/*.c)
BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BINS:= $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
CUDA_TEST_SRC := $(wildcard tests/cuda/test_*.c)
CUDA_TEST_BINS:= $(patsubst tests/cuda/%.c,$(BUILD)/tests/cuda/%,$(CUDA_TEST_SRC))

.PHONY: all tokenizers test-deps fuzz fuzz-build fuzz-bins test test-asan run bench lint format clean ref test-cuda bench-cuda
all: $(BIN) $(LIB) $(CUDA_MODULE) $(CUDA_MODULE_INSTALL)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/obj/src/cli/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# -MMD -MP: the module is rebuilt when a header it includes changes (backend.h's structs are
# shared with it; a stale module is refused at load for a changed cv_backend)
$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $(@:.o=.d) -c $< -o $@

# -Bsymbolic: the module's own functions are never interposed by the executable's exports.
$(CUDA_MODULE): $(CU_OBJ)
	$(NVCC) -shared -cudart shared -o $@ $^ -Xlinker -soname,libcorevital_cuda.so \
	  -Xlinker -Bsymbolic -Xlinker -rpath,$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/lib64 -lcublas

ifneq ($(CUDA_MODULE_INSTALL),)
$(CUDA_MODULE_INSTALL): $(CUDA_MODULE)
	cp $< $@
endif

$(BUILD)/tests/%: tests/%.c $(TEST_UTIL) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Itests -Itests/util -o $@ $< $(TEST_UTIL) $(LIB) $(LDFLAGS) $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(wildcard bench/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ibench -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

# The real tokenizer files (tests/data/tokenizers, xz-compressed in git) unpacked for the suites.
TOK_XZ   := $(wildcard tests/data/tokenizers/*/*.xz)
TOK_PLAIN:= $(filter-out %.xz %.md,$(wildcard tests/data/tokenizers/*/*))
TOK_DIR  := $(BUILD)/tokenizers
TOK_FILES:= $(patsubst tests/data/tokenizers/%.xz,$(TOK_DIR)/%,$(TOK_XZ)) \
            $(patsubst tests/data/tokenizers/%,$(TOK_DIR)/%,$(TOK_PLAIN))
$(TOK_DIR)/%: tests/data/tokenizers/%.xz
	@mkdir -p $(dir $@)
	xz -dc $< > $@.tmp && mv $@.tmp $@
$(TOK_DIR)/%: tests/data/tokenizers/%
	@mkdir -p $(dir $@)
	cp $< $@
tokenizers: $(TOK_FILES)

# Servers the suites start themselves (the Prometheus Pushgateway), installed like the -dev
# packages when missing.
test-deps:
	@sh scripts/install-test-deps.sh

# Each suite runs from the repository root (fixtures are found by relative path).
test: $(BIN) $(CUDA_MODULE) $(CUDA_MODULE_INSTALL) $(TEST_BINS) $(TOK_FILES) test-deps
	@fail=0; for t in $(TEST_BINS); do \
	  echo "== $$t"; CV_TEST_BIN=./$(BIN) CV_TOKENIZERS_DIR=$(TOK_DIR) CK_FORK=no ./$$t || fail=1; \
	done; \
	if [ $$fail -ne 0 ]; then echo "make test: FAILED"; exit 1; fi; echo "make test: all suites passed"

test-asan:
	$(MAKE) SAN=1 BUILD=build-asan test

# The AVX-512 kernels on a CPU without AVX-512 (CI's machines have none): their branches built
# with the intrinsics emulated in C and AVX2 (tests/avx512emu/avx512emu.h), and every suite run.
# AVX512EMU_ISA: the subsets, as on Sapphire Rapids / Zen 4 (default), or AVX512EMU_ISA="F BW VL
# DQ" as on Skylake-X (no BF16 prefill, int8 without VNNI). With SAN=1, under ASan + UBSan.
AVX512EMU_ISA   ?= F BW VL DQ BF16 VNNI
AVX512EMU_FLAGS := -mno-avx512f -DCV_AVX512_EMU $(foreach f,$(AVX512EMU_ISA),-D__AVX512$(f)__) \
                   -Itests/avx512emu -Wno-psabi
# one build folder per subset list (and sanitizer), e.g. build-avx512emu-F-BW-VL-DQ-asan
AVX512EMU_BUILD := build-avx512emu-$(subst $() ,-,$(strip $(AVX512EMU_ISA)))$(if $(filter 1,$(SAN)),-asan)
test-avx512emu:
	$(MAKE) NO_CUDA=1 BUILD=$(AVX512EMU_BUILD) EXTRA_CFLAGS="$(AVX512EMU_FLAGS)" test

test-cuda: $(BIN) $(CUDA_MODULE_INSTALL) $(CUDA_TEST_BINS)
	@if [ -z "$(NVCC)" ]; then echo "test-cuda: nvcc not found"; exit 1; fi
	@fail=0; for t in $(CUDA_TEST_BINS); do echo "== $$t"; ./$$t || fail=1; done; exit $$fail

$(BUILD)/tests/cuda/%: tests/cuda/%.c $(wildcard tests/cuda/*.h) $(TEST_UTIL) $(LIB) $(CUDA_MODULE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Itests -Itests/util -o $@ $< $(TEST_UTIL) -Wl,--no-as-needed $(CUDA_MODULE) \
	  $(LIB) $(LDFLAGS) $(CHECK_LIBS) $(LDLIBS) $(CUDA_RT) -Wl,-rpath,'$$ORIGIN/../..'

ifneq ($(NVCC),)
$(BUILD)/bench/bench_cuda: bench/bench_cuda.c $(wildcard bench/*.h) $(LIB) $(CUDA_MODULE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ibench -o $@ $< -Wl,--no-as-needed $(CUDA_MODULE) $(LIB) $(LDFLAGS) $(LDLIBS) $(CUDA_RT) \
	  -Wl,-rpath,'$$ORIGIN/..'
endif

RUN_MODEL  ?= tests/fixtures/gpt2-tiny
RUN_PROMPT ?= The quick brown fox
run: $(BIN)
	./$(BIN) run --model $(RUN_MODEL) --prompt "$(RUN_PROMPT)" --max_new_tokens 20

bench: $(BIN) $(BENCH_BINS) $(TOK_FILES)
	CV_TOKENIZERS_DIR=$(TOK_DIR) sh bench/run.sh $(BUILD)

bench-cuda: $(BIN) $(CUDA_MODULE_INSTALL) $(BENCH_BINS)
	sh bench/run_cuda.sh $(BUILD)

LINT_DIRS := src tokenizer include
FORMAT_FILES = $(shell find src tokenizer include tests bench kernels -name '*.[ch]' -o -name '*.cu' -o -name '*.cuh' | grep -v '/fixtures/')
lint:
	clang-format --dry-run --Werror $(FORMAT_FILES)
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,performance,portability \
	  --inline-suppr --suppress=missingIncludeSystem -Iinclude -Isrc -DCV_HAVE_CUDA_LINT=0 $(LINT_DIRS)

format:
	clang-format -i $(FORMAT_FILES)

# libFuzzer harnesses (tests/fuzz/): the library built by clang with ASan + UBSan and
# coverage, then each harness run for FUZZ_SECONDS (tests/fuzz/run.sh; FUZZ=name limits it).
FUZZ_SECONDS ?= 20
FUZZ_BUILD   := build-fuzz
FUZZ_FLAGS   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/fuzz/%,$(FUZZ_SRC))
fuzz-build:
	$(MAKE) CC=clang BUILD=$(FUZZ_BUILD) NO_CUDA=1 OPT="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" $(FUZZ_BUILD)/libcorevital.a
	$(MAKE) CC=clang BUILD=$(FUZZ_BUILD) NO_CUDA=1 OPT="$(FUZZ_FLAGS)" fuzz-bins
fuzz-bins: $(FUZZ_BINS)
$(FUZZ_BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz_common.h $(FUZZ_BUILD)/libcorevital.a
	@mkdir -p $(dir $@)
	clang $(CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libcorevital.a $(LDFLAGS) -fsanitize=fuzzer,address,undefined $(LDLIBS)
fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ)

ref:
	sh tests/ref/run.sh

clean:
	rm -rf build build-asan build-avx512emu* build-fuzz corevital libcorevital_cuda.so

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
