"""Reading what an emulated run leaves: the linker map (flash by origin, the driver's own RAM)
and the ``emu ...`` lines the driver prints (arena, allocation types, stack, ticks, outputs)."""

from __future__ import annotations

import re
from pathlib import Path

from tinyexport.errors import UserError

# --- the map file ---------------------------------------------------------------------------
_FLASH_SECTIONS = (".text", ".rodata", ".data", ".ARM.extab", ".ARM.exidx", ".init_array")
_ENTRY = re.compile(r"^ (\S+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)(?:\s+(\S.*))?\s*$")
_MEMBER = re.compile(r"\(([^()]+\.o)\)$")


def map_entries(map_text: str):
    """(output section, input section, bytes, file) for every input section the map places
    (``*fill*`` padding with file ""). Merged string sections can share addresses: only the bytes
    past the highest address seen so far in the output section count, so the sums equal the
    output sections' sizes."""
    out_section, pending, high = None, None, 0
    start = map_text.find("Linker script and memory map")
    for line in map_text[start:].splitlines():
        if line and not line.startswith(" "):
            out_section, pending, high = line.split()[0], None, 0
            continue
        if out_section not in _FLASH_SECTIONS + (".bss",):
            continue
        m = _ENTRY.match(line)
        if m and (m.group(1) or pending):
            name = m.group(1) or pending
            pending = None
            addr, size = int(m.group(2), 16), int(m.group(3), 16)
            new = max(0, addr + size - max(addr, high))
            high = max(high, addr + size)
            if new:
                yield out_section, name, new, (m.group(4) or "").strip()
        elif re.match(r"^ \S+$", line):  # a long input-section name; address etc. next line
            pending = line.strip()


def object_categories(tflm_lib: Path) -> dict[str, str]:
    """Member name -> 'framework' / 'kernels' from the object folders of TFLM's make: its
    kernels folder, third_party (CMSIS-NN) and the kernel helpers of core (tensorflow/lite/kernels:
    kernel_util, quantization_util...) are kernels, the rest of core the framework. A basename
    found in both (kernel_util.o) counts as kernels: the map names archive members only."""
    obj = tflm_lib.parent.parent / "obj"
    cats: dict[str, str] = {}
    for o in obj.rglob("*.o"):
        rel = o.relative_to(obj).as_posix()
        kernel = not rel.startswith("core/") or "/kernels/" in rel
        if cats.get(o.name) != "kernels":
            cats[o.name] = "kernels" if kernel else "framework"
    return cats


# The driver's own .bss that an application would not have: the bisection's arena (up to twice
# the bundle's), the recording interpreter and the per-op tick table.
_EMULATOR_BSS = ("arena", "rec_storage", "op_ticks")


# The main() of each image: the emulator's driver (run image), the application stand-in (product).
_MAINS = ("emu_driver.o", "product_main.o")


def flash_split(map_text: str, cats: dict[str, str]) -> tuple[dict, dict]:
    """(flash bytes by origin, static RAM bytes) from a GNU ld map (run or product image)."""
    flash = {"model": 0, "tflm_framework": 0, "kernels": 0, "cmsis_nn": 0, "runtime": 0,
             "driver": 0, "test_inputs": 0, "padding": 0}
    ram = {"data": 0, "bss": 0, "bss_emulator": 0}
    for out_section, name, size, path in map_entries(map_text):
        member = _MEMBER.search(path)
        base = member.group(1) if member else Path(path).name
        if out_section == ".bss":
            emulator_only = "emu_driver" in base and any(k in name for k in _EMULATOR_BSS)
            ram["bss_emulator" if emulator_only else "bss"] += size
            continue
        if out_section == ".data":
            ram["data"] += size
        if name == "*fill*":
            key = "padding"
        elif base == "model_data.o":
            key = "model"
        elif base in _MAINS:
            key = "test_inputs" if "g_emu_inputs" in name else "driver"
        elif member and "libtensorflow-microlite" in path:
            key = {"framework": "tflm_framework", "kernels": "kernels"}.get(cats.get(base, ""),
                                                                           "tflm_framework")
            if base.startswith("arm_"):
                flash["cmsis_nn"] += size  # also counted in kernels
        else:
            key = "runtime"  # startup, libc, libm, libstdc++, libgcc, librdimon
        flash[key] += size
    flash["total"] = sum(v for k, v in flash.items() if k != "cmsis_nn")
    flash["total_without_test_inputs"] = flash["total"] - flash["test_inputs"]
    return flash, ram


def harness_delta(run: dict, product: dict) -> dict:
    """What the emulator's run image adds to the product image's flash (both ``flash_split``
    dicts): in all, without the random test inputs, and per part (runtime: full newlib, printf,
    semihosting; driver: the measuring main against the product's)."""
    parts = ("model", "tflm_framework", "kernels", "runtime", "driver", "padding")
    return {"total": run["total"] - product["total"],
            "without_test_inputs": run["total_without_test_inputs"] - product["total"],
            "test_inputs": run["test_inputs"], **{k: run[k] - product[k] for k in parts}}


# --- the run ------------------------------------------------------------------------------------
_LINE = re.compile(r"^emu ([a-z_]+)(?: (\d+))?:?(.*)$", re.M)


def parse_output(text: str) -> dict:
    found: dict = {"invoke_ticks": {}, "output": {}}
    for key, idx, value in _LINE.findall(text):
        if idx:
            found.setdefault(key, {})[int(idx)] = value.split()
        else:
            found[key] = value.strip()
    return found


# tflite::RecordedAllocationType, in order (recording_micro_allocator.h @90b983c2).
RECORDED_TYPES = ("eval_tensors", "persistent_tensors", "persistent_tensor_quantization",
                  "persistent_buffers", "variable_buffers", "node_and_registrations",
                  "builtin_data")


def recorded_sections(found: dict) -> dict:
    """Head and tail of the plain interpreter at ``arena_min`` (the head from the recording
    interpreter, which plans the same; the tail is the rest of ``arena_used``) and the recorded
    bytes / counts per allocation type."""
    head = int(found["rec_head"])
    types = {}
    for idx, (used, requested, count) in sorted(found.get("rec_type", {}).items()):
        name = RECORDED_TYPES[idx] if idx < len(RECORDED_TYPES) else f"type{idx}"
        types[name] = {"bytes": int(used), "requested": int(requested), "count": int(count)}
    return {"head": head, "tail": int(found["arena_used"]) - head, "by_type": types}


def stack_high_water(found: dict) -> int:
    used, painted = int(found["stack_used"]), int(found["stack_painted"])
    if used >= painted:
        raise UserError(f"the stack went deeper than the {painted:,} B the driver paints; "
                        "raise kPaintBytes in firmware_eval/emu_driver.cc")
    return used
