"""The bundle drops into Arduino, Zephyr and a plain CMake project (issue 19 §7), with the model
API (tinyexport_model.h), labels.h and the int8-only kernel registrations (issue 22).

The CMake project is configured and built with arm-none-eabi-gcc for Cortex-M7 against the TFLM
sources of the emulation (``build_bundle_cortex_m.sh fetch-sources`` layout, or TFLM_SRC): linked
against TFLM's prebuilt CMSIS-NN library when that exists, else compiled without a link. The
Arduino library's sources compile with the host g++ against the same TFLM headers. Arduino CLI
and the Zephyr SDK are not assumed: their layouts are checked as files here.
"""

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinyexport.firmware_eval import bundle as bundle_writer
from tinyexport.firmware_eval.emulate import source_dirs
from tinyexport.firmware_eval.tflm_readiness import load

DATA = Path(__file__).parent / "data"
MODEL = DATA / "keras_tiny_int8.tflite"
NAME = bundle_writer.ARDUINO_LIBRARY
LIB = f"arduino/{NAME}"
CMSIS_NN_M7 = "gen/cortex_m_qemu_cortex-m7_default_cmsis_nn_gcc/lib/libtensorflow-microlite.a"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    graph = load(MODEL)
    bundle_writer.write_bundle(out, MODEL.read_bytes(), graph, 4096, name="keras_tiny_int8")
    return out


def tflm_headers() -> tuple[Path, Path]:
    """(TFLM tree, its downloads folder) or a skip saying what is missing."""
    tflm, _ = source_dirs()
    if not tflm or not Path(tflm, "tensorflow/lite/micro/micro_interpreter.h").is_file():
        pytest.skip("no tflite-micro sources: set TFLM_SRC or run "
                    "scripts/build_bundle_cortex_m.sh fetch-sources "
                    "~/.cache/tinyexport/cortex-m-src")
    downloads = Path(tflm, "tensorflow/lite/micro/tools/make/downloads")
    if not (downloads / "flatbuffers/include/flatbuffers/flatbuffers.h").is_file():
        pytest.skip(f"{downloads}/flatbuffers missing: run scripts/build_bundle_cortex_m.sh once "
                    "(it places TFLM's third-party headers)")
    return Path(tflm), downloads


def test_int8_only_kernels_registered_where_every_use_is_int8(bundle):
    text = (bundle / "op_resolver.h").read_text()
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "FULLY_CONNECTED"):
        assert f"(tflite::Register_{op}_INT8())" in text, op
    assert "r.AddReshape() != kTfLiteOk" in text  # no int8 variant: the plain registration
    assert '#include "tensorflow/lite/micro/kernels/conv.h"' in text
    assert len(bundle_writer.resolver_ops(text)) == 9
    # An int16 activation (16x8 model) keeps the plain CONV_2D kernel.
    graph = load(MODEL)
    conv = next(op for op in graph.ops if op.opcode == "CONV_2D")
    tensors = list(graph.tensors)
    tensors[conv.inputs[0]] = dataclasses.replace(tensors[conv.inputs[0]], dtype="int16")
    int16_graph = dataclasses.replace(graph, tensors=tuple(tensors))
    assert "CONV_2D" not in bundle_writer.int8_only_ops(int16_graph)


def test_labels_and_model_api(bundle):
    labels = (bundle / "labels.h").read_text()
    assert "kNumClasses = 10;" in labels and '"9"' in labels
    out = load(MODEL).tensors[load(MODEL).outputs[0]]
    named = bundle_writer.labels_header(out, [f'c{i} "x"' for i in range(10)])
    assert r'"c3 \042x\042"' in named
    with pytest.raises(ValueError, match="3 class names for an output of 10"):
        bundle_writer.labels_header(out, ["a", "b", "c"])
    api = (bundle / "tinyexport_model.cc").read_text()
    assert "tflite::InitializeTarget();" in api and "kTensorArenaSize" in api
    assert "tflite::InitializeTarget();" in (bundle / "main.cc").read_text()
    assert "kInputBytes = 768;" in (bundle / "preprocess.h").read_text()


def test_arduino_library_layout(bundle):
    lib = bundle / LIB
    lines = (lib / "library.properties").read_text().splitlines()
    props = dict(line.split("=", 1) for line in lines)
    assert props["name"] == NAME and props["includes"] == f"{NAME}.h"
    for key in ("version", "author", "maintainer", "sentence", "paragraph", "category", "url",
                "architectures"):
        assert props[key], key
    sources = [p.relative_to(lib) for p in lib.rglob("*") if p.is_file()]
    # Arduino compiles .c/.cpp/.S (not .cc); every source it sees must be one it compiles.
    assert {p.suffix for p in sources} == {".cpp", ".h", ".ino", ".properties"}
    assert Path(f"examples/{NAME}Classify/{NAME}Classify.ino") in sources
    for src in lib.glob("src/*"):
        assert "int main(" not in src.read_text(), src.name
    assert (lib / "src/model_data.cpp").read_text() == (bundle / "model_data.cc").read_text()
    for path in bundle.rglob("*"):
        assert not path.is_file() or not re.search(r"@[A-Z]+@", path.read_text()), path


def test_zephyr_sample_layout(bundle):
    cmake = (bundle / "zephyr/CMakeLists.txt").read_text()
    assert "find_package(Zephyr" in cmake and "project(keras_tiny_int8" in cmake
    for src in re.findall(r"\$\{TX_BUNDLE\}/(\S+\.cc)", cmake):
        assert (bundle / src).is_file(), src
    conf = (bundle / "zephyr/prj.conf").read_text()
    for line in ("CONFIG_CPP=y", "CONFIG_STD_CPP17=y", "CONFIG_TENSORFLOW_LITE_MICRO=y"):
        assert line in conf.splitlines(), line
    example = (bundle / "cmake/example_main.cc").read_text()
    assert (bundle / "zephyr/src/main.cpp").read_text() == example


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found: apt-get install g++")
def test_arduino_sources_compile_with_host_compiler(bundle):
    """The library's .cpp files and headers compile (C++17, -Werror) against TFLM's headers; the
    .ino needs Arduino's core (Serial) and is not compiled here."""
    tflm, downloads = tflm_headers()
    proc = subprocess.run(
        ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
         "-Wno-unused-parameter", "-fno-rtti", "-fno-exceptions", "-DTF_LITE_STATIC_MEMORY",
         f"-I{bundle / LIB / 'src'}", f"-I{tflm}", f"-I{downloads / 'flatbuffers/include'}",
         f"-I{downloads / 'gemmlowp'}", f"-I{downloads / 'ruy'}",
         *map(str, sorted((bundle / LIB / "src").glob("*.cpp")))],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def complete_library(lib: Path) -> bool:
    """True when ``lib`` is a finished TFLM + CMSIS-NN archive (a build in progress leaves an
    empty or partial one): it then holds the interpreter and CMSIS-NN's convolution."""
    if not lib.is_file():
        return False
    members = subprocess.run(["arm-none-eabi-ar", "t", str(lib)], capture_output=True,
                             text=True).stdout.split()
    return {"micro_interpreter.o", "arm_convolve_s8.o"} <= set(members)


@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None,
                    reason="arm-none-eabi-gcc not found: apt-get install gcc-arm-none-eabi "
                           "libnewlib-arm-none-eabi")
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not found: apt-get install cmake")
def test_cmake_project_builds_for_cortex_m7(bundle, tmp_path):
    tflm, _ = tflm_headers()
    lib = tflm / CMSIS_NN_M7
    link = complete_library(lib)
    configure = ["cmake", "-S", str(bundle / "cmake"), "-B", str(tmp_path),
                 f"-DCMAKE_TOOLCHAIN_FILE={bundle / 'cmake/arm-none-eabi.cmake'}",
                 f"-DTFLM_ROOT={tflm}"]
    if link:  # TFLM's CMSIS-NN library for this core: link a whole program
        configure += [f"-DTFLM_LIB={lib}", "-DTX_SPECS=rdimon.specs"]
    for cmd in (configure, ["cmake", "--build", str(tmp_path)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "libtinyexport_model.a").is_file()
    if link:
        elf = tmp_path / "tinyexport_example"
        assert elf.is_file()
        symbols = subprocess.run(["arm-none-eabi-nm", "-C", str(elf)], capture_output=True,
                                 text=True).stdout
        assert "tx_model_init" in symbols and "g_model_data" in symbols
        assert "arm_convolve" in symbols  # the CMSIS-NN kernels, not the reference ones
