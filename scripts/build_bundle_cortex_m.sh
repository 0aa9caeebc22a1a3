#!/usr/bin/env bash
# Build a tinyexport C bundle (an export's firmware/ folder) for an Arm Cortex-M core emulated by
# QEMU, against TensorFlow Lite Micro with the CMSIS-NN optimized kernels.
#
#   scripts/build_bundle_cortex_m.sh CORE BUNDLE_DIR OUT_DIR
#   scripts/build_bundle_cortex_m.sh fetch-sources DIR     # git clone the pinned commits (GitHub)
#
# CORE is cortex-m4 (run it with `qemu-system-arm -M mps2-an386`) or cortex-m7 (`-M mps2-an500`).
# Writes OUT_DIR/firmware.elf and OUT_DIR/firmware.map (the run image). The ELF has a minimal
# startup (vector table, reset handler that copies .data, zeroes .bss and calls main; SysTick
# handler) and prints through Arm semihosting (newlib's librdimon), so run it with
#   qemu-system-arm -M mps2-an386 -nographic -semihosting-config enable=on,target=native \
#     -kernel OUT_DIR/firmware.elf
# firmware_eval/emulate.py drives all of this (build, run, compare with the Python TFLM).
#
# Host packages (Debian/Ubuntu): gcc-arm-none-eabi libnewlib-arm-none-eabi (the cross compiler and
# newlib with librdimon) and qemu-system-arm (to run the ELF).
#
# Sources. Nothing is downloaded unless you ask for it (fetch-sources): TFLM_SRC is a tflite-micro
# tree at TFLM_COMMIT below, and TFLM's make system reads its third-party code from
# $TFLM_SRC/tensorflow/lite/micro/tools/make/downloads/{flatbuffers,gemmlowp,ruy,kissfft,pigweed,
# cmsis,cmsis/Cortex_DFP,cmsis_nn,gcc_embedded}. Missing ones are filled from prepared source trees
# (plain checkouts or `git archive` exports at the pinned commits) named by
#   CMSIS_NN_SRC CMSIS_SRC CORTEX_DFP_SRC FLATBUFFERS_SRC GEMMLOWP_SRC RUY_SRC KISSFFT_SRC
# or, for any of them not set, THIRD_PARTY_SRC/{cmsis_nn,cmsis,cortex_dfp,flatbuffers,gemmlowp,
# ruy,kissfft} (the layout fetch-sources writes, with TFLM in THIRD_PARTY_SRC/tflm). The copies
# get TFLM's patches (flatbuffers.patch, kissfft.patch) as its download scripts apply them;
# pigweed (tests only) is left empty and gcc_embedded links to the arm-none-eabi-* on PATH.
#
# The TFLM library (make -f tensorflow/lite/micro/tools/make/Makefile TARGET=cortex_m_qemu
# TARGET_ARCH=CORE OPTIMIZED_KERNEL_DIR=cmsis_nn microlite, everything at -Os) is built once per
# core and profile under $TFLM_SRC/gen and reused.
#
# Product image. With PRODUCT_MAIN_SRC (a .cc with main()), the same bundle objects and library
# are linked a second time as a product would link them: newlib-nano (--specs=nano.specs), no
# semihosting (--specs=nosys.specs; the startup skips initialise_monitor_handles), that main
# instead of the driver: OUT_DIR/product.elf and OUT_DIR/product.map (not run; flash only).
#
# FIRMWARE_PROFILE (a library build each): product (default: -Os, TFLM BUILD_TYPE=default),
# release (-Os, BUILD_TYPE=release: error strings and DCHECKs stripped), speed (TFLM and CMSIS-NN
# kernels at -O2, BUILD_TYPE=default; built under $TFLM_SRC/gen-o2).
#
# Environment: PYTHON (see below), JOBS (parallel compiles, default nproc), EXTRA_SRCS (more .cc files linked in),
# EXTRA_CXXFLAGS, MAIN_SRC (a .cc with main() instead of the bundle's main.cc), PRODUCT_MAIN_SRC,
# FIRMWARE_PROFILE.
set -euo pipefail

# Pinned commits: tflite-micro as the tinyexport tests use it (90b983c2, 2026-08-20, the newest
# commit reachable here; the venv's tflite-micro wheel 0.dev20261023182759 is built from the same
# main branch and its interpreter gives the reference outputs), and the third-party commits that
# this TFLM's download scripts pin (tools/make/ext_libs/cmsis_nn_download.sh, cmsis_download.sh,
# tools/make/third_party_downloads.inc, flatbuffers_download.sh).
TFLM_COMMIT=90b983c2b3f1480642e040bbd2ddb37b998f3424
CMSIS_NN_COMMIT=4ab83cc3cc98fb85ed6dafb55e8ca02f1628dcae
CMSIS_COMMIT=5782d6f8057906d360f4b95ec08a2354afe5c9b9        # ARM-software/CMSIS_6
CORTEX_DFP_COMMIT=c2c70a97a20fb355815e2ead3d4a40e35a4a3cdf   # ARM-software/Cortex_DFP
FLATBUFFERS_COMMIT=v25.9.23
GEMMLOWP_COMMIT=719139ce755a0f31cbf1c37f7f98adcc7fc9f425
RUY_COMMIT=d37128311b445e758136b8602d1bbd2a755e115d
KISSFFT_COMMIT=v130

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

if [ "${1:-}" = "fetch-sources" ]; then
  [ $# -eq 2 ] || usage
  mkdir -p "$2"
  while read -r name repo commit; do
    [ -d "$2/$name" ] && { echo "$2/$name exists, kept" >&2; continue; }
    git clone -q "https://github.com/$repo" "$2/$name"
    git -C "$2/$name" checkout -q "$commit"
  done <<EOF
tflm tensorflow/tflite-micro $TFLM_COMMIT
cmsis_nn ARM-software/CMSIS-NN $CMSIS_NN_COMMIT
cmsis ARM-software/CMSIS_6 $CMSIS_COMMIT
cortex_dfp ARM-software/Cortex_DFP $CORTEX_DFP_COMMIT
flatbuffers google/flatbuffers $FLATBUFFERS_COMMIT
gemmlowp google/gemmlowp $GEMMLOWP_COMMIT
ruy google/ruy $RUY_COMMIT
kissfft mborgerding/kissfft $KISSFFT_COMMIT
EOF
  echo "sources in $2: TFLM_SRC=$2/tflm THIRD_PARTY_SRC=$2" >&2
  exit 0
fi

[ $# -eq 3 ] || usage
CORE=$1
case "$CORE" in
  cortex-m4|cortex-m7) ;;
  *) echo "error: CORE must be cortex-m4 or cortex-m7, not $CORE" >&2; exit 2 ;;
esac
# The profile's library: BUILD_TYPE names its folder (gen/..._release_...); the kernels' -O level
# does not, so the speed build gets its own BASE_GENDIR (make does not rebuild on changed flags).
PROFILE_CXXFLAGS=""   # what the profile's library is compiled with that the bundle must match
case "${FIRMWARE_PROFILE:-product}" in
  product) PROFILE_ARGS=(BUILD_TYPE=default KERNEL_OPTIMIZATION_LEVEL=-Os
                         THIRD_PARTY_KERNEL_OPTIMIZATION_LEVEL=-Os) ;;
  release) PROFILE_ARGS=(BUILD_TYPE=release KERNEL_OPTIMIZATION_LEVEL=-Os
                         THIRD_PARTY_KERNEL_OPTIMIZATION_LEVEL=-Os)
           PROFILE_CXXFLAGS="-DNDEBUG -DTF_LITE_STRIP_ERROR_STRINGS" ;;
  speed) PROFILE_ARGS=(BUILD_TYPE=default BASE_GENDIR=gen-o2 KERNEL_OPTIMIZATION_LEVEL=-O2
                       THIRD_PARTY_KERNEL_OPTIMIZATION_LEVEL=-O2) ;;
  *) echo "error: FIRMWARE_PROFILE must be product, release or speed, not $FIRMWARE_PROFILE" >&2
     exit 2 ;;
esac
BUNDLE=$(cd "$2" && pwd)
mkdir -p "$3"
OUT=$(cd "$3" && pwd)
JOBS=${JOBS:-$(nproc)}
: "${TFLM_SRC:?set TFLM_SRC to a tflite-micro source tree (commit $TFLM_COMMIT)}"
[ -d "$TFLM_SRC" ] || { echo "error: TFLM_SRC=$TFLM_SRC is not a folder" >&2; exit 2; }
TFLM=$(cd "$TFLM_SRC" && pwd)
[ -f "$TFLM/tensorflow/lite/micro/micro_interpreter.h" ] || {
  echo "error: TFLM_SRC=$TFLM is not a tflite-micro source tree" >&2; exit 2; }
for tool in arm-none-eabi-gcc arm-none-eabi-g++ arm-none-eabi-ar make patch; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool not on PATH (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)" >&2
    exit 2; }
done
for f in model_data.cc model_data.h op_resolver.h arena_size.h; do
  [ -f "$BUNDLE/$f" ] || { echo "error: $BUNDLE/$f missing: not a tinyexport bundle" >&2; exit 2; }
done

# --- 1. TFLM's downloads folder, from prepared trees. ---
MAKEDIR=$TFLM/tensorflow/lite/micro/tools/make
DL=$MAKEDIR/downloads
mkdir -p "$DL"
place() {  # place NAME VAR PATCH: copy $VAR (or THIRD_PARTY_SRC/NAME) to $DL/NAME, then patch
  local name=$1 var=$2 patch=${3:-} src
  local dest=$DL/$name
  [ "$name" = cortex_dfp ] && dest=$DL/cmsis/Cortex_DFP
  [ -d "$dest" ] && [ -n "$(ls -A "$dest")" ] && return 0
  src=${!var:-}
  [ -z "$src" ] && [ -n "${THIRD_PARTY_SRC:-}" ] && src=$THIRD_PARTY_SRC/$name
  if [ -z "$src" ] || [ ! -d "$src" ]; then
    echo "error: $dest missing; set $var (or THIRD_PARTY_SRC) to a source tree (see $0)" >&2
    exit 2
  fi
  mkdir -p "$dest"
  (cd "$src" && tar -c --exclude=.git .) | tar -x -C "$dest"
  find "$dest" -type f -name '*BUILD' -delete   # as download_and_extract.sh does
  if [ -n "$patch" ]; then patch -s -p1 -d "$dest" < "$TFLM/$patch"; fi
  echo "placed $src -> $dest" >&2
}
place flatbuffers FLATBUFFERS_SRC tensorflow/lite/micro/tools/make/flatbuffers.patch
place gemmlowp GEMMLOWP_SRC
place ruy RUY_SRC
place kissfft KISSFFT_SRC third_party/kissfft/kissfft.patch
place cmsis CMSIS_SRC
place cortex_dfp CORTEX_DFP_SRC
place cmsis_nn CMSIS_NN_SRC
mkdir -p "$DL/pigweed"   # TFLM's make clones it at parse time; only its tests use it
if [ ! -e "$DL/gcc_embedded/bin/arm-none-eabi-gcc" ]; then
  mkdir -p "$DL/gcc_embedded/bin"
  for t in gcc g++ ar as ld objcopy objdump size nm readelf; do
    ln -sf "$(command -v arm-none-eabi-$t)" "$DL/gcc_embedded/bin/arm-none-eabi-$t"
  done
fi

# --- 2. The TFLM library (TFLM's make; incremental). ---
MAKE_ARGS=(-f tensorflow/lite/micro/tools/make/Makefile TARGET=cortex_m_qemu TARGET_ARCH="$CORE"
           OPTIMIZED_KERNEL_DIR=cmsis_nn "${PROFILE_ARGS[@]}")
# TFLM's Makefile runs `python3` with numpy and Pillow while it parses (generated example arrays):
# PYTHON names one that has them (default python3; emulate.py passes its own interpreter).
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import numpy, PIL' 2>/dev/null || {
  echo "error: TFLM's make needs python3 with numpy and Pillow; set PYTHON to one" >&2; exit 2; }
mkdir -p "$OUT/pybin"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$(command -v "$PYTHON")" > "$OUT/pybin/python3"
chmod +x "$OUT/pybin/python3"
start=$(date +%s)
PATH="$OUT/pybin:$PATH" make -s -C "$TFLM" "${MAKE_ARGS[@]}" -j"$JOBS" microlite >&2
LIB=$(PATH="$OUT/pybin:$PATH" make -s -C "$TFLM" "${MAKE_ARGS[@]}" print-MICROLITE_LIB_PATH | sed -n 's/^MICROLITE_LIB_PATH=//p')
case "$LIB" in /*) ;; *) LIB=$TFLM/$LIB ;; esac
[ -f "$LIB" ] || { echo "error: TFLM library $LIB not found after make" >&2; exit 1; }
echo "$LIB" > "$OUT/tflm_library.txt"   # emulate.py reads the object layout next to it
echo "tflm library: $LIB ($(( $(date +%s) - start )) s)" >&2

# --- 3. Startup and linker script for the QEMU MPS2 boards (AN386: Cortex-M4, AN500: Cortex-M7;
# both: 4 MiB ZBT SSRAM1 at 0x0 for code, 4 MiB SSRAM2/3 at 0x20000000 for data). ---
cat > "$OUT/startup.c" <<'EOF'
/* Generated by build_bundle_cortex_m.sh: minimal Cortex-M startup for QEMU mps2 boards. */
#include <stdint.h>
#include <stdlib.h>
extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top__;
extern int main(void);
extern void __libc_init_array(void);
extern void initialise_monitor_handles(void);
volatile uint32_t systick_wraps;
void Reset_Handler(void) {
  uint32_t *src = &__data_load__, *dst = &__data_start__;
  while (dst < &__data_end__) *dst++ = *src++;
  for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
#ifndef TINYEXPORT_PRODUCT /* the product image has no semihosting */
  initialise_monitor_handles();
#endif
  __libc_init_array();
  exit(main());
}
/* -nostartfiles leaves out crti/crtn/crtbegin: the symbols of theirs that the code uses. */
void _init(void) {}
void _fini(void) {}
void *__dso_handle = 0;  /* static destructors registered with __cxa_atexit (never run) */
void Default_Handler(void) { exit(120); }
void SysTick_Handler(void) { ++systick_wraps; }
__attribute__((section(".vectors"), used)) void (*const vectors[16])(void) = {
    (void (*)(void))&__stack_top__, Reset_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0, Default_Handler,
    Default_Handler, 0, Default_Handler, SysTick_Handler};
EOF
cat > "$OUT/link.ld" <<'EOF'
/* Generated by build_bundle_cortex_m.sh for QEMU mps2-an386 / mps2-an500. */
MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M
         RAM (rwx)  : ORIGIN = 0x20000000, LENGTH = 4M }
ENTRY(Reset_Handler)
SECTIONS {
  .text : { KEEP(*(.vectors)) *(.text*) KEEP(*(.init)) KEEP(*(.fini)) } > FLASH
  .rodata : { *(.rodata*) . = ALIGN(4); } > FLASH
  .ARM.extab : { *(.ARM.extab* .gnu.linkonce.armextab.*) } > FLASH
  .ARM.exidx : { __exidx_start = .; *(.ARM.exidx*) __exidx_end = .; } > FLASH
  .init_array : { __init_array_start = .; KEEP(*(SORT(.init_array.*))) KEEP(*(.init_array))
                  __init_array_end = .;
                  __preinit_array_start = .; KEEP(*(.preinit_array)) __preinit_array_end = .;
                  __fini_array_start = .; KEEP(*(.fini_array)) __fini_array_end = .; } > FLASH
  __data_load__ = ALIGN(4);
  .data : AT(__data_load__) { . = ALIGN(4); __data_start__ = .; *(.data*) . = ALIGN(4);
                              __data_end__ = .; } > RAM
  .bss (NOLOAD) : { . = ALIGN(4); __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(4);
                    __bss_end__ = .; } > RAM
  . = ALIGN(8); end = .; _end = .; __end__ = .;    /* heap (newlib's sbrk) */
  __stack_top__ = ORIGIN(RAM) + LENGTH(RAM);
}
EOF

# --- 4. The bundle, with the flags of TFLM's make for this target. ---
ARCH_FLAGS="-mcpu=$CORE -mthumb -mfloat-abi=soft -funsigned-char -mlittle-endian \
 -fomit-frame-pointer"
CXXFLAGS_ALL="$ARCH_FLAGS -std=c++17 -fno-rtti -fno-exceptions -fno-threadsafe-statics \
 -fno-unwind-tables -ffunction-sections -fdata-sections -fmessage-length=0 \
 -DTF_LITE_STATIC_MEMORY -DTF_LITE_MCU_DEBUG_LOG -DCMSIS_NN -Wall -Wno-unused-parameter -Os \
 $PROFILE_CXXFLAGS"
INCLUDES="-I$TFLM -I$DL -I$DL/gemmlowp -I$DL/flatbuffers/include -I$DL/ruy -I$DL/kissfft"
start=$(date +%s)
mkdir -p "$OUT/obj"
arm-none-eabi-gcc $ARCH_FLAGS -Os -c "$OUT/startup.c" -o "$OUT/obj/startup.o"
OBJS=("$OUT/obj/startup.o")
# One object per source, named after it, so the map file attributes each one (model_data.o...).
# shellcheck disable=SC2086  # word splitting of the flag strings is intended
compile() {  # compile SRC into $OBJ: its object, named after it, in $OUT/obj
  OBJ=$OUT/obj/$(basename "${1%.*}").o
  arm-none-eabi-g++ $CXXFLAGS_ALL ${EXTRA_CXXFLAGS:-} $INCLUDES -I"$BUNDLE" -c "$1" -o "$OBJ"
}
compile "$BUNDLE/model_data.cc"
MODEL_OBJ=$OBJ
OBJS+=("$MODEL_OBJ")
for src in "${MAIN_SRC:-$BUNDLE/main.cc}" ${EXTRA_SRCS:-}; do
  compile "$src"
  OBJS+=("$OBJ")
done
arm-none-eabi-g++ $ARCH_FLAGS "${OBJS[@]}" "$LIB" -nostartfiles -T "$OUT/link.ld" \
  --specs=rdimon.specs -lm -Wl,--gc-sections -Wl,-Map="$OUT/firmware.map" \
  -Wl,--no-warn-rwx-segments -o "$OUT/firmware.elf"
echo "firmware: $OUT/firmware.elf ($(( $(date +%s) - start )) s)" >&2
arm-none-eabi-size -A "$OUT/firmware.elf" | grep -E '^\.(text|rodata|data|bss|init_array|ARM)' >&2

# --- 5. The product image: the same bundle and library, linked as an application would be. ---
if [ -n "${PRODUCT_MAIN_SRC:-}" ]; then
  arm-none-eabi-gcc $ARCH_FLAGS -Os -DTINYEXPORT_PRODUCT -c "$OUT/startup.c" \
    -o "$OUT/obj/startup_product.o"
  compile "$PRODUCT_MAIN_SRC"
  arm-none-eabi-g++ $ARCH_FLAGS "$OUT/obj/startup_product.o" "$MODEL_OBJ" "$OBJ" "$LIB" \
    -nostartfiles -T "$OUT/link.ld" --specs=nano.specs --specs=nosys.specs -lm -Wl,--gc-sections \
    -Wl,-Map="$OUT/product.map" -Wl,--no-warn-rwx-segments -o "$OUT/product.elf"
  echo "product image: $OUT/product.elf" >&2
  arm-none-eabi-size -A "$OUT/product.elf" | grep -E '^\.(text|rodata|data|init_array|ARM)' >&2
fi
