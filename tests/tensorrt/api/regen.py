"""Rebuild the per-line TensorRT API name tables (``names_8.6.txt``, ``names_10.13.txt``, ``names_11.4.txt``,
``names_rtx1.7.txt``).

Sources (installed by ``make test``'s set-up step, see the Makefile):

* **10.13**: the ``tensorrt-stubs==10.13.0.35.1`` wheel, installed with ``--no-deps --target
  $(VENV)/trt-api/stubs`` (NOT into site-packages: its ``tensorrt/`` folder holds only ``.pyi``
  files and would make ``import tensorrt`` succeed as an empty namespace package). Its
  ``tensorrt_bindings/tensorrt.pyi`` is not valid Python (a non-default argument follows a
  default one), so a copy is patched in memory until :mod:`ast` parses it.
* **11.4**: the real ``tensorrt_lean_cu12_bindings==11.4.0.106`` wheel (runtime API only),
  introspected with ``dir()`` on classes and enums in a subprocess; nothing is constructed
  (``trt.Runtime`` aborts the process without a GPU). Builder / parser classes, which the lean
  module lacks, are the 10.13 names minus what ``../shared/reference/tensorrt-jetson-gstreamer.md``
  section 1.1 lists as removed in 11.0, plus the names it lists as added in 11.x.
* **rtx1.7**: the real ``tensorrt-rtx-cu12-bindings==1.7.1.116`` wheel (module
  ``tensorrt_rtx_bindings``; the full builder + parser + runtime API), introspected with ``dir()``
  the same way, in a subprocess. Nothing is derived: every entry is the wheel's own.
* **8.6**: the 10.13 names minus what the reference lists as added after 8.6, plus what it lists
  as removed in 10.0/10.1 (the binding API, ``max_workspace_size``, ``build_engine``, ...). Names
  added between 8.6 and 10.13 that the reference does not list stay in the 8.6 table (the 8.6
  table over-approximates; see the README's "Static API check").

Entries: ``Name`` for a module-level name, ``Class.member`` for members (methods, properties,
enum members, nested classes; inherited members included; overridable methods that a class's
docstring shows as ``def name(self, ...)`` included, since pybind11 trampolines do not list them).

Usage: ``python tests/tensorrt/api/regen.py`` (write) or ``--check`` (exit 1 when a committed table
differs from what the installed packages give).
"""

from __future__ import annotations

import argparse
import ast
import json
import keyword
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUBS_VERSION = "10.13.0.35.1"
LEAN_VERSION = "11.4.0.106"
RTX_VERSION = "1.7.1.116"
REFERENCE = "../shared/reference/tensorrt-jetson-gstreamer.md section 1.1"

# --- From the reference, section 1.1 (each line: where it says so) ---------------------------
# Removed in 11.0 (present in 10.13).
REMOVED_IN_11 = (
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",  # "rm in 11.0: the enum member is gone"
    # BuilderFlag precision flags: "dep in 10.12, rm in 11.0"
    "BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.BF16", "BuilderFlag.FP8",
    "BuilderFlag.INT4", "BuilderFlag.FP4",
    "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS",
    "BuilderFlag.WEIGHTLESS",  # "dep 10.0 (use STRIP_PLAN), rm 11.0"
    "BuilderFlag.REJECT_EMPTY_ALGORITHMS", "IBuilderConfig.algorithm_selector", "IAlgorithmSelector",
    # implicit INT8 calibration: "pyInt8.cpp is deleted in v11.0"
    "IBuilderConfig.int8_calibrator", "IInt8Calibrator", "IInt8EntropyCalibrator2",
    "IInt8EntropyCalibrator", "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator", "CalibrationAlgoType",
    "IBuilderConfig.set_calibration_profile", "IBuilderConfig.get_calibration_profile",
    "QuantizationFlag", "IBuilderConfig.set_quantization_flag", "IBuilderConfig.get_quantization_flag",
    "IBuilderConfig.clear_quantization_flag", "ITensor.dynamic_range", "ITensor.set_dynamic_range",
    # "builder.platform_has_fast_fp16, .platform_has_fast_int8, .platform_has_tf32: rm 11.0"
    "Builder.platform_has_fast_fp16", "Builder.platform_has_fast_int8", "Builder.platform_has_tf32",
    # "ILayer.precision, .set_output_type, .reset_precision, etc.: rm 11.0 (strong typing)"
    "ILayer.precision", "ILayer.set_output_type", "ILayer.reset_precision", "ILayer.get_output_type",
    "ILayer.output_type_is_set", "ILayer.reset_output_type", "ILayer.precision_is_set",
    # "create_execution_context_without_device_memory dep 10.x, rm 11.0"
    "ICudaEngine.create_execution_context_without_device_memory",
    # "engine.device_memory_size, get_device_memory_size_for_profile, weight_streaming_budget,
    #  minimum_weight_streaming_budget, has_implicit_batch_dimension: rm 11.0"
    "ICudaEngine.device_memory_size", "ICudaEngine.get_device_memory_size_for_profile",
    "ICudaEngine.weight_streaming_budget", "ICudaEngine.minimum_weight_streaming_budget",
    "ICudaEngine.has_implicit_batch_dimension",
    "TacticSource.CUBLAS", "TacticSource.CUBLAS_LT", "TacticSource.CUDNN",  # "rm 11.0"
    "OnnxParser.parse_with_weight_descriptors", "OnnxParser.supports_model",  # "rm 11.0"
    "Refitter.get_dynamic_range", "Refitter.set_dynamic_range",  # "(get/set_dynamic_range rm 11.0)"
)
# Added in 11.x (absent in 10.13): "IBuilderConfig.build_route, all_build_routes: + 11.x";
# OnnxParserFlag "ENABLE_PLUGIN_OVERRIDE, ADJUST_FOR_DLA (+10.16)" and "11.x keeps all".
ADDED_IN_11 = (
    "IBuilderConfig.build_route", "IBuilderConfig.all_build_routes",
    "OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE", "OnnxParserFlag.ADJUST_FOR_DLA",
)
# Added after 8.6 (present in 10.13, absent in 8.6).
ADDED_AFTER_8_6 = (
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",  # "+ 9.x"
    "NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS",  # "+ 10.x"
    "NetworkDefinitionCreationFlag.PREFER_JIT_PYTHON_PLUGINS",
    "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY",  # "(+10.9)"
    "BuilderFlag.EDITABLE_TIMING_CACHE",  # "(+10.8)"
    "ExecutionContextAllocationStrategy",  # "10.x/11.x"
    "Builder.build_engine_with_config",  # "+ 10.6"
    "Builder.build_serialized_network_to_stream",  # "+ 10.13"
    "OnnxParserRefitter",  # "OnnxParserRefitter + 10.0"
    "OnnxParserFlag.ENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA",  # "(+10.11)"
    "RuntimePlatform", "IBuilderConfig.runtime_platform",  # "(10.2+)"
    "IStreamReaderV2",  # "overloads with IStreamReader/IStreamReaderV2 in 10.x"
    # Not in the reference, from NVIDIA's 10.0 / 10.1 release notes: weight streaming (10.0), *_v2 (10.1).
    "ICudaEngine.weight_streaming_budget", "ICudaEngine.minimum_weight_streaming_budget",
    "ICudaEngine.device_memory_size_v2", "ICudaEngine.get_device_memory_size_for_profile_v2",
    "ICudaEngine.weight_streaming_budget_v2",
)
# Removed in 10.0 / 10.1 (present in 8.6, absent in 10.13).
REMOVED_IN_10 = (
    "NetworkDefinitionCreationFlag.EXPLICIT_PRECISION",  # "rm in 10.0"
    "IBuilderConfig.max_workspace_size",  # "max_workspace_size rm 10.0"
    "Builder.build_engine",  # "build_engine rm 10.0"
    # "Binding API: engine.num_bindings, get_binding_*, binding_is_input, max_batch_size,
    #  context.execute, execute_async, execute_async_v2, set_binding_shape,
    #  get_profile_shape_input: rm 10.0" (get_binding_* spelled out from the 8.6 API)
    "ICudaEngine.num_bindings", "ICudaEngine.binding_is_input", "ICudaEngine.max_batch_size",
    "ICudaEngine.get_binding_name", "ICudaEngine.get_binding_index", "ICudaEngine.get_binding_shape",
    "ICudaEngine.get_binding_dtype", "ICudaEngine.get_binding_format",
    "ICudaEngine.get_binding_format_desc", "ICudaEngine.get_binding_vectorized_dim",
    "ICudaEngine.get_binding_bytes_per_component", "ICudaEngine.get_binding_components_per_element",
    "ICudaEngine.get_profile_shape_input", "ICudaEngine.is_shape_binding",
    "ICudaEngine.is_execution_binding", "ICudaEngine.get_location",
    "ICudaEngine.get_profile_shape",  # "rm 10.1 (use get_tensor_profile_shape)"
    "IExecutionContext.execute", "IExecutionContext.execute_async", "IExecutionContext.execute_async_v2",
    "IExecutionContext.set_binding_shape", "IExecutionContext.get_binding_shape",
    "IExecutionContext.set_shape_input", "IExecutionContext.get_shape",
    "Builder.max_batch_size",
)


def find_stubs() -> Path | None:
    """The 10.13 stub file ``tensorrt_bindings/tensorrt.pyi``, or ``None`` when not installed."""
    roots = [os.environ.get("ENDOEDGE_TRT_STUBS", ""), str(Path(sys.prefix) / "trt-api" / "stubs"), *sys.path]
    for root in roots:
        if root:
            pyi = Path(root) / "tensorrt_bindings" / "tensorrt.pyi"
            if pyi.is_file():
                return pyi
    return None


def _parse_patched(text: str) -> ast.Module:
    """ast-parse the stub text, dropping default values on lines the parser rejects."""
    lines = text.splitlines()
    for _ in range(200):
        try:
            return ast.parse("\n".join(lines))
        except SyntaxError as err:
            i = (err.lineno or 1) - 1
            fixed = re.sub(r"\s*=\s*[^,()]+(?=[,)])", "", lines[i])  # default before non-default
            fixed = re.sub(r"\b({})(\s*:)".format("|".join(keyword.kwlist)), r"\1_\2", fixed)  # `in: int`
            if fixed == lines[i]:
                raise
            lines[i] = fixed
    raise RuntimeError("could not patch the TensorRT stubs into parseable Python")


_DOC_DEF = re.compile(r"def\s+([A-Za-z]\w*)\s*\(\s*self\b")


def _public(name: str) -> bool:
    return not name.startswith("_")


def stub_names(pyi: Path) -> set[str]:
    """Module-level names and ``Class.member`` entries of a stub file (inherited members included)."""
    return stub_api(pyi)[0]


def stub_api(pyi: Path) -> tuple[set[str], dict[str, set[str]]]:
    """``(entries, subclasses)``: the names, and each class's transitive subclasses (itself included)."""
    tree = _parse_patched(pyi.read_text(encoding="utf-8"))
    top: set[str] = set()
    own: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}

    def members_of(cls: ast.ClassDef, prefix: str) -> None:
        mem = own.setdefault(prefix, set())
        doc = ast.get_docstring(cls) or ""
        mem.update(n for n in _DOC_DEF.findall(doc) if _public(n))
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
                mem.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if _public(node.target.id):
                    mem.add(node.target.id)
            elif isinstance(node, ast.Assign):
                mem.update(t.id for t in node.targets if isinstance(t, ast.Name) and _public(t.id))
            elif isinstance(node, ast.ClassDef) and _public(node.name):
                mem.add(node.name)
                members_of(node, f"{prefix}.{node.name}")

    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            top.add(node.name)
            bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
            members_of(node, node.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
        elif isinstance(node, ast.Assign):
            top.update(t.id for t in node.targets if isinstance(t, ast.Name))
    top = {n for n in top if _public(n)}

    def inherited(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out = set(own.get(name, set()))
        for b in bases.get(name, []):
            if b not in seen:
                out |= inherited(b, seen | {name})
        return out

    entries = set(top)
    for cls in own:
        mem = inherited(cls) if "." not in cls else own[cls]
        entries.update(f"{cls}.{m}" for m in mem)
    # The package front end (tensorrt/__init__.py) adds these Python helpers to the bindings.
    entries.update({"volume", "nptype", "__version__"})
    subclasses = {c: {d for d in bases if c in _ancestors(d, bases)} | {c} for c in bases}
    return entries, subclasses


def _ancestors(name: str, bases: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    todo = list(bases.get(name, []))
    while todo:
        b = todo.pop()
        if b not in out:
            out.add(b)
            todo.extend(bases.get(b, []))
    return out


_LEAN_SCRIPT = r"""
import json, re, sys
import tensorrt_lean_bindings as trt
doc_def = re.compile(r"def\s+([A-Za-z]\w*)\s*\(\s*self\b")
out = {"version": trt.__version__, "top": [], "members": {}}
for name in dir(trt):
    if name.startswith("_"):
        continue
    obj = getattr(trt, name)
    if isinstance(obj, type(sys)):
        continue  # imported helper modules (os, sys, ctypes, ...)
    out["top"].append(name)
    if isinstance(obj, type):
        mem = {m for m in dir(obj) if not m.startswith("_")}
        mem |= {m for m in doc_def.findall(obj.__doc__ or "") if not m.startswith("_")}
        out["members"][name] = sorted(mem)
print(json.dumps(out))
"""


def lean_api(module: str = "tensorrt_lean_bindings") -> dict[str, object] | None:
    """``{"version", "top", "members"}`` of an installed TensorRT module (in a subprocess), ``None`` if absent."""
    script = _LEAN_SCRIPT.replace("import tensorrt_lean_bindings as trt", f"import {module} as trt")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return None
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def _drop(entries: set[str], names: tuple[str, ...], subclasses: dict[str, set[str]]) -> set[str]:
    """Remove names; ``Class.member`` also from the class's subclasses, ``Class`` with its members."""
    out = set(entries)
    for n in names:
        if "." not in n:
            out.discard(n)
            out = {e for e in out if not e.startswith(n + ".")}
            continue
        cls, _, mem = n.rpartition(".")
        for sub in subclasses.get(cls, {cls}):
            out.discard(f"{sub}.{mem}")
    return out


def derive_86(n1013: set[str], subclasses: dict[str, set[str]]) -> set[str]:
    """The 8.6 table from the 10.13 one and the reference's added/removed lists."""
    return _drop(n1013, ADDED_AFTER_8_6, subclasses) | set(REMOVED_IN_10)


def derive_114(n1013: set[str], lean: dict[str, object], subclasses: dict[str, set[str]]) -> set[str]:
    """The 11.4 table: the lean module where it has a class, else 10.13 minus removed plus added."""
    members: dict[str, list[str]] = lean["members"]  # type: ignore[assignment]
    lean_top: list[str] = lean["top"]  # type: ignore[assignment]
    base = _drop(n1013, REMOVED_IN_11, subclasses) | set(ADDED_IN_11)
    out = {e for e in base if e.split(".")[0] not in members}
    out.update(t for t in lean_top if t not in ("attr", "value", "ctypes", "os", "sys", "warnings"))
    for cls, mem in members.items():
        out.update(f"{cls}.{m}" for m in mem)
    out.update({"volume", "nptype", "__version__"})
    return out


def derive_rtx(api: dict[str, object]) -> set[str]:
    """The rtx1.7 table: every public name of the real ``tensorrt_rtx_bindings`` module and its classes."""
    members: dict[str, list[str]] = api["members"]  # type: ignore[assignment]
    top: list[str] = api["top"]  # type: ignore[assignment]
    out = {t for t in top if t not in ("attr", "value", "ctypes", "os", "sys", "warnings")}
    for cls, mem in members.items():
        out.update(f"{cls}.{m}" for m in mem)
    out.update({"volume", "nptype", "__version__"})
    return out


HEADERS = {
    "10.13": f"TensorRT 10.13 Python API names, from the tensorrt-stubs=={STUBS_VERSION} wheel "
    "(tensorrt_bindings/tensorrt.pyi, ast-parsed after patching; inherited members included).",
    "11.4": f"TensorRT 11.4 Python API names: runtime classes/enums from dir() of the real "
    f"tensorrt_lean_cu12_bindings=={LEAN_VERSION} wheel (imported in a subprocess, nothing "
    f"constructed); classes the lean module lacks (builder, network, parser) = the 10.13 names "
    f"minus those {REFERENCE} lists as removed in 11.0, plus those it lists as added in 11.x.",
    "rtx1.7": f"TensorRT for RTX 1.7 Python API names: dir() of the real tensorrt_rtx_bindings module of "
    f"tensorrt-rtx-cu12-bindings=={RTX_VERSION} (imported in a subprocess, nothing constructed).",
    "8.6": f"TensorRT 8.6 Python API names: the 10.13 names minus those {REFERENCE} lists as "
    "added after 8.6, plus those it lists as removed in 10.0/10.1 (binding API, max_workspace_size, "
    "build_engine, ...). Over-approximates: additions the reference does not list stay in.",
}


def render(line: str, entries: set[str]) -> str:
    """Table file text: ``#`` header lines, then one sorted entry per line."""
    head = [f"# {HEADERS[line]}", "# Regenerate: python tests/tensorrt/api/regen.py (needs the Makefile's TRT API install)."]
    return "\n".join(head + sorted(entries)) + "\n"


def rtx_table() -> str | None:
    """The rtx1.7 table rendered, or ``None`` when TensorRT for RTX 1.7 is not installed."""
    api = lean_api("tensorrt_rtx_bindings")
    if api is None or not str(api.get("version", "")).startswith("1.7"):
        return None
    return render("rtx1.7", derive_rtx(api))


def build_tables() -> dict[str, str] | None:
    """The tables rendered (rtx1.7 only where TensorRT for RTX is installed), or ``None`` when the
    stubs or the lean wheel are not installed."""
    pyi = find_stubs()
    lean = lean_api()
    if pyi is None or lean is None or not str(lean.get("version", "")).startswith("11.4"):
        return None
    n1013, subclasses = stub_api(pyi)
    out = {
        "8.6": render("8.6", derive_86(n1013, subclasses)),
        "10.13": render("10.13", n1013),
        "11.4": render("11.4", derive_114(n1013, lean, subclasses)),
    }
    rtx = rtx_table()
    if rtx is not None:
        out["rtx1.7"] = rtx
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed tables")
    args = parser.parse_args(argv)
    tables = build_tables()
    if tables is None:
        print("tensorrt-stubs 10.13 (in $(VENV)/trt-api/stubs) and tensorrt_lean_cu12_bindings 11.4 "
              "are needed; run `make venv`", file=sys.stderr)
        return 2
    bad = 0
    for line, text in tables.items():
        path = HERE / f"names_{line}.txt"
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                print(f"{path.name} is stale; run python tests/tensorrt/api/regen.py", file=sys.stderr)
                bad = 1
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path} ({text.count(chr(10)) - 2} names)")
    return bad


if __name__ == "__main__":
    sys.exit(main())
