"""Static TensorRT API check (issue 6, item 4): the checker itself, the committed name tables, and
the real run over every TensorRT-using module in src/endoedge. CPU only; TensorRT is never run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import checker  # noqa: E402
import regen  # noqa: E402

SRC = HERE.parents[2] / "src" / "endoedge"
HEAD = "from endoedge.tensorrt.compat import import_tensorrt, trt_version\n"


CLASSIC = ("8.6", "10.13", "11.4")


@pytest.fixture(scope="module")
def all_tables() -> dict[str, checker.Table]:
    return checker.load_tables()


@pytest.fixture(scope="module")
def tables(all_tables) -> dict[str, checker.Table]:
    """The three full-TensorRT lines (the snippet tests below spell out their violations)."""
    return {k: v for k, v in all_tables.items() if k in CLASSIC}


def bad(src: str, tables: dict[str, checker.Table]) -> set[tuple[str, str]]:
    """``{(name, line)}`` the checker flags in a snippet (wrapped in a function with trt/ver bound)."""
    body = textwrap.indent(textwrap.dedent(src), "    ")
    code = f"{HEAD}\ndef f(config, engine, context, builder, network, layer, x):\n"
    code += "    trt = import_tensorrt()\n    ver = trt_version(trt)\n" + body
    return {(v.name, v.line) for v in checker.check_source(code, "snippet.py", tables)}


# -- the tables say what the reference says -------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "present"),
    [
        ("BuilderFlag.FP16", {"8.6", "10.13"}),
        ("BuilderFlag.INT8", {"8.6", "10.13"}),
        ("BuilderFlag.VERSION_COMPATIBLE", {"8.6", "10.13", "11.4"}),
        ("NetworkDefinitionCreationFlag.EXPLICIT_BATCH", {"8.6", "10.13"}),
        ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", {"10.13", "11.4"}),
        ("IBuilderConfig.int8_calibrator", {"8.6", "10.13"}),
        ("IInt8EntropyCalibrator2", {"8.6", "10.13"}),
        ("IExecutionContext.execute_async_v2", {"8.6"}),
        ("IExecutionContext.execute_async_v3", {"8.6", "10.13", "11.4"}),
        ("ICudaEngine.num_bindings", {"8.6"}),
        ("ICudaEngine.num_io_tensors", {"8.6", "10.13", "11.4"}),
        ("ICudaEngine.device_memory_size", {"8.6", "10.13"}),
        ("ICudaEngine.device_memory_size_v2", {"10.13", "11.4"}),
        ("IBuilderConfig.max_workspace_size", {"8.6"}),
        ("TacticSource.CUBLAS", {"8.6", "10.13"}),
        ("IBuilderConfig.build_route", {"11.4"}),
        ("volume", {"8.6", "10.13", "11.4"}),
    ],
)
def test_tables_follow_the_reference(tables, entry, present):
    assert {line for line, t in tables.items() if t.has(entry)} == present


# -- the checker on small sources ------------------------------------------------------------
def test_guarded_fp16_passes(tables):
    assert bad("if ver.has_precision_flags:\n    config.set_flag(trt.BuilderFlag.FP16)\n", tables) == set()


def test_unguarded_fp16_fails_for_11(tables):
    assert bad("config.set_flag(trt.BuilderFlag.FP16)\n", tables) == {("trt.BuilderFlag.FP16", "11.4")}


def test_unguarded_int8_calibrator_fails_for_11(tables):
    assert bad("config.int8_calibrator = x\n", tables) == {("int8_calibrator", "11.4")}
    assert bad("if ver.has_implicit_calibration:\n    config.int8_calibrator = x\n", tables) == set()


def test_explicit_batch(tables):
    guarded = "if ver.needs_explicit_batch_flag:\n    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)\n"
    assert bad(guarded, tables) == set()
    loose = "flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)\n"
    assert bad(loose, tables) == {("trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "11.4")}


def test_execute_async_v2_fails_for_10_and_11(tables):
    assert bad("context.execute_async_v2([0, 0], 0)\n", tables) == {
        ("execute_async_v2", "10.13"),
        ("execute_async_v2", "11.4"),
    }
    assert bad("context.execute_async_v3(0)\n", tables) == set()


@pytest.mark.parametrize("use", ["engine.num_bindings", "engine.get_binding_shape(0)", "engine.binding_is_input(0)",
                                 "context.set_binding_shape(0, (1, 3))", "config.max_workspace_size = 1"])
def test_binding_api_removed_in_10_fails(tables, use):
    name = use.split(".")[1].split("(")[0].split(" ")[0]
    assert bad(use + "\n", tables) == {(name, "10.13"), (name, "11.4")}


@pytest.mark.parametrize(
    "src",
    [
        "if ver.major < 11:\n    config.set_flag(trt.BuilderFlag.INT8)\n",
        "if (ver.major, ver.minor) < (11, 0):\n    config.set_flag(trt.BuilderFlag.INT8)\n",
        "if ver < TrtVersion(11, 0):\n    config.set_flag(trt.BuilderFlag.INT8)\n",
        "if ver.strongly_typed_only:\n    pass\nelse:\n    config.set_flag(trt.BuilderFlag.INT8)\n",
        "if not ver.has_precision_flags:\n    return None\nconfig.set_flag(trt.BuilderFlag.INT8)\n",
        "if ver.major >= 11:\n    raise ValueError('no')\nconfig.int8_calibrator = x\n",
        "if hasattr(trt.BuilderFlag, 'INT8'):\n    config.set_flag(trt.BuilderFlag.INT8)\n",
        "if hasattr(config, 'int8_calibrator'):\n    config.int8_calibrator = x\n",
        "ver.has_precision_flags and config.set_flag(trt.BuilderFlag.FP16)\n",
        "flag = trt.BuilderFlag.FP16 if ver.has_precision_flags else None\n",
        "if x and ver.has_precision_flags:\n    config.set_flag(trt.BuilderFlag.FP16)\n",
        "if ver.major == 10 and ver.has_strongly_typed_flag:\n"
        "    f = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED\n",
        "mem = engine.device_memory_size_v2 if ver.major >= 10 else engine.device_memory_size\n",
        "for i in range(3):\n    if ver.strongly_typed_only:\n        continue\n    config.set_flag(trt.BuilderFlag.FP16)\n",
        "config.set_flag(trt.BuilderFlag.FP16)  # trt-api: ignore\n",
        "f = getattr(config, 'int8_calibrator', None)\n",
    ],
)
def test_recognised_guards_pass(tables, src):
    assert bad("from endoedge.tensorrt.compat import TrtVersion\n" + src, tables) == set()


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        # the else branch of a guard is the negation: FP16 reached by 11.4 there
        ("if ver.has_precision_flags:\n    pass\nelse:\n    config.set_flag(trt.BuilderFlag.FP16)\n",
         {("trt.BuilderFlag.FP16", "11.4")}),
        # `or` does not narrow its right operand to the guard's lines
        ("if x or ver.has_precision_flags:\n    config.set_flag(trt.BuilderFlag.FP16)\n",
         {("trt.BuilderFlag.FP16", "11.4")}),
        # a guard for the wrong lines
        ("if ver.major >= 10:\n    context.execute_async_v2([], 0)\n",
         {("execute_async_v2", "10.13"), ("execute_async_v2", "11.4")}),
        # no early exit: the code after the if is reached by every line
        ("if not ver.has_precision_flags:\n    pass\nconfig.set_flag(trt.BuilderFlag.FP16)\n",
         {("trt.BuilderFlag.FP16", "11.4")}),
        # a name that exists in no line
        ("trt.BuilderFlag.FP17\n", {("trt.BuilderFlag.FP17", "8.6"), ("trt.BuilderFlag.FP17", "10.13"),
                                    ("trt.BuilderFlag.FP17", "11.4")}),
        ("trt.NoSuchClass()\n", {("trt.NoSuchClass", "8.6"), ("trt.NoSuchClass", "10.13"),
                                 ("trt.NoSuchClass", "11.4")}),
        # statements nested in match cases are checked too
        ("match x:\n    case 1:\n        context.execute_async_v2([], 0)\n",
         {("execute_async_v2", "10.13"), ("execute_async_v2", "11.4")}),
        # added after 8.6
        ("s = trt.ExecutionContextAllocationStrategy.STATIC\n", {("trt.ExecutionContextAllocationStrategy.STATIC", "8.6")}),
        # a receiver of unknown type sharing a TensorRT member name is checked (ILayer.precision: rm 11.0)
        ("print(x.precision)\n", {("precision", "11.4")}),
    ],
)
def test_violations_found(tables, src, expected):
    assert bad(src, tables) == expected


def test_receivers_known_not_to_be_tensorrt_are_skipped(tables):
    code = HEAD + textwrap.dedent(
        """
        import numpy as np
        from dataclasses import dataclass

        def f(opts: "BuildOptions", n: int):
            trt = import_tensorrt()
            parts = []
            print(opts.precision, np.int8, parts.precision)

        class Options:
            def __init__(self):
                self.precision = "fp16"

            def show(self):
                return self.precision
        """
    )
    assert checker.check_source(code, "s.py", tables) == []


def test_function_line_markers(tables):
    code = HEAD + textwrap.dedent(
        '''
        def calib(config):
            """Implicit calibration.

            TensorRT lines: 8.6, 10.x
            """
            trt = import_tensorrt()
            config.int8_calibrator = trt.IInt8EntropyCalibrator2()

        # trt-lines: 10
        def strong(builder):
            trt = import_tensorrt()
            return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))

        def unmarked(config):
            trt = import_tensorrt()
            config.int8_calibrator = trt.IInt8EntropyCalibrator2()
        '''
    )
    found = {(v.name, v.line) for v in checker.check_source(code, "s.py", tables)}
    assert found == {("int8_calibrator", "11.4"), ("trt.IInt8EntropyCalibrator2", "11.4")}


def test_subclass_overrides(tables):
    code = HEAD + textwrap.dedent(
        """
        def make():
            trt = import_tensorrt()
            ver = trt_version(trt)
            class Alloc(trt.IOutputAllocator):
                def reallocate_output_async(self, name, mem, size, align, stream):
                    return mem
                def notify_shape(self, name, shape):
                    self.shape = shape
                def helper(self):
                    return 1
            if ver.has_implicit_calibration:
                class Calib(trt.IInt8MinMaxCalibrator):
                    def get_batch_size(self):
                        return 1
            class Loose(trt.IInt8EntropyCalibrator2):
                def get_batch(self, names):
                    return None
            class Typo(trt.IOutputAllocator):
                def reallocate_output_asnyc(self, name, mem, size, align, stream):
                    return mem
            return Alloc, Loose
        """
    )
    found = {(v.name, v.line) for v in checker.check_source(code, "s.py", tables)}
    # the unguarded calibrator base is missing in 11.4; a misspelt override is a helper (not flagged)
    assert found == {("trt.IInt8EntropyCalibrator2", "11.4")}


def test_module_detection_and_aliased_bases(tables):
    code = textwrap.dedent(
        """
        from endoedge.tensorrt.compat import trt_version

        def make(trt, data):
            ver = trt_version(trt)
            if not ver.has_implicit_calibration:
                raise ValueError("11.x")
            base = trt.IInt8EntropyCalibrator2
            class Calib(base):
                def get_batch_size(self):
                    return 1
            return Calib()

        def loose(trt):
            base = trt.IInt8MinMaxCalibrator
            class Calib(base):
                def get_batch(self, names):
                    return None
            return Calib()
        """
    )
    assert checker.uses_tensorrt(code)
    assert not checker.uses_tensorrt("import numpy as np\nx = np.zeros(3)\n")
    found = {(v.name, v.line) for v in checker.check_source(code, "s.py", tables)}
    assert found == {("trt.IInt8MinMaxCalibrator", "11.4")}


def test_sample_builder_fixture_is_clean_and_covers_many_names(tables):
    path = HERE / "samples" / "sample_builder.py"
    source = path.read_text(encoding="utf-8")
    assert checker.uses_tensorrt(source)
    mod = checker.ModuleChecker(str(path), source, tables)
    assert [str(v) for v in mod.run()] == []
    names = {n for _, n, _ in mod.uses}
    assert len(names) >= 50
    for must in ("BuilderFlag.FP16", "BuilderFlag.INT8", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
                 "int8_calibrator", "execute_async_v3", "set_tensor_address", "get_tensor_profile_shape"):
        assert must in names
    # drop the guards and the same file is no longer clean
    unguarded = source.replace("if ver.has_precision_flags:", "if True:").replace(
        "if ver.needs_explicit_batch_flag:", "if True:"
    )
    found = {(v.name, v.line) for v in checker.check_source(unguarded, "u.py", tables)}
    assert {("trt.BuilderFlag.FP16", "11.4"), ("trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "11.4")} <= found


# Modules that must be covered whenever they exist (a refactor must not silently drop one).
MUST_CHECK = ("_trt.py", "export/trt_build.py", "export/trt_calibrator.py", "runtime/tensorrt.py")


def test_endoedge_tensorrt_modules_are_clean(all_tables):
    """The real check over src/endoedge, every line TensorRT for RTX included: the shim, the
    builder, the calibrator, the RTX targets and the backends."""
    modules, violations = checker.check_tree(SRC, all_tables)
    assert modules, "no TensorRT-using module found under src/endoedge: the check would check nothing"
    checked = {p.relative_to(SRC).as_posix() for p in modules}
    assert {m for m in MUST_CHECK if (SRC / m).is_file()} <= checked
    assert [str(v) for v in violations] == []


# -- the tables match the installed sources of truth ----------------------------------------
def test_committed_tables_match_installed_packages():
    if regen.find_stubs() is None:
        pytest.skip("tensorrt-stubs 10.13 not installed in $(VENV)/trt-api/stubs (the Makefile installs it)")
    if importlib.util.find_spec("tensorrt_lean_bindings") is None:
        pytest.skip("tensorrt_lean_cu12_bindings 11.4 not installed (the Makefile installs it on CPython 3.11)")
    tables = regen.build_tables()
    assert tables is not None, "the installed lean bindings are not 11.4"
    for line, text in tables.items():
        committed = (HERE / f"names_{line}.txt").read_text(encoding="utf-8")
        assert committed == text, f"names_{line}.txt is stale: run python tests/tensorrt/api/regen.py"


RUNTIME_PATH = {
    # what the TensorRT backend uses (reference section 1.4), checked on the real 11.4 module
    "Runtime": ["deserialize_cuda_engine", "engine_host_code_allowed", "DLA_core"],
    "ICudaEngine": ["num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype",
                    "get_tensor_profile_shape", "create_execution_context", "num_optimization_profiles",
                    "device_memory_size_v2"],
    "IExecutionContext": ["set_input_shape", "set_tensor_address", "execute_async_v3", "get_tensor_shape",
                          "infer_shapes", "set_output_allocator", "set_optimization_profile_async"],
    "TensorIOMode": ["INPUT", "OUTPUT"],
    "DataType": ["FLOAT", "HALF", "INT8", "INT32", "BOOL"],
    "ExecutionContextAllocationStrategy": ["STATIC", "ON_PROFILE_CHANGE", "USER_MANAGED"],
    "Logger": ["WARNING", "ERROR", "INFO"],
}

_PROBE = r"""
import json, sys
import tensorrt_lean_bindings as trt   # import only: never construct trt.Runtime without a GPU
req = json.loads(sys.argv[1])
bare = json.loads(sys.argv[2])
out = {"version": trt.__version__, "missing": [], "top_missing": [], "bare_missing": []}
for top in ("nptype", "volume", "IOutputAllocator"):
    if not hasattr(trt, top):
        out["top_missing"].append(top)
for cls, names in req.items():
    k = getattr(trt, cls, None)
    out["missing"] += [f"{cls}.{n}" for n in names if k is None or not hasattr(k, n)]
classes = [getattr(trt, n) for n in dir(trt) if isinstance(getattr(trt, n), type)]
out["classes"] = [k.__name__ for k in classes]
out["bare_missing"] = [n for n in bare if not any(hasattr(k, n) for k in classes)]
print(json.dumps(out))
"""


def test_runtime_path_names_exist_in_the_real_11_4_lean_module(tables):
    if importlib.util.find_spec("tensorrt_lean_bindings") is None:
        pytest.skip("tensorrt_lean_cu12_bindings 11.4 not installed (the Makefile installs it on CPython 3.11)")
    req = {k: list(v) for k, v in RUNTIME_PATH.items()}
    bare: set[str] = set()
    # plus every runtime-class name the checked code reaches on 11.4 (trt.X.Y chains), and every
    # attribute name the runtime modules (the TensorRT backend) use on TensorRT objects
    for path in [HERE / "samples" / "sample_builder.py", *checker.check_tree(SRC, tables)[0]]:
        mod = checker.ModuleChecker(str(path), path.read_text(encoding="utf-8"), tables)
        mod.run()
        for _, name, reach in mod.uses:
            cls, _, mem = name.partition(".")
            if "11.4" in reach and mem and cls in RUNTIME_PATH:
                req[cls].append(mem.split(".")[0])
        if "runtime" in path.parts:
            bare.update(name for _, name, reach in mod.member_uses if "11.4" in reach)
    argv = [sys.executable, "-c", _PROBE, json.dumps(req), json.dumps(sorted(bare))]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["version"].startswith("11.4")
    assert out["missing"] == []
    assert out["top_missing"] == []
    # a name the 11.4 table has only on builder classes (not in the lean wheel) cannot be checked live
    builder_only = {m for cls, mem in tables["11.4"].classes.items() if cls.split(".")[0] not in out["classes"]
                    for m in mem}
    assert [n for n in out["bare_missing"] if n not in builder_only] == []
    for cls, names in req.items():  # and the committed 11.4 table agrees with the live module
        assert all(tables["11.4"].has(f"{cls}.{n}") for n in names), cls


# -- TensorRT for RTX (the rtx1.7 line: its table is dir() of the real wheel) -----------------
@pytest.mark.parametrize(
    ("entry", "present"),
    [
        ("ComputeCapability.SM86", {"rtx1.7"}),
        ("IBuilderConfig.set_compute_capability", {"rtx1.7"}),
        ("IBuilderConfig.num_compute_capabilities", {"rtx1.7"}),
        ("Runtime.get_engine_validity", {"rtx1.7"}),
        ("BuilderFlag.FP16", {"8.6", "10.13"}),
        ("IInt8EntropyCalibrator2", {"8.6", "10.13"}),
        ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", {"10.13", "11.4", "rtx1.7"}),
        ("IExecutionContext.execute_async_v3", {"8.6", "10.13", "11.4", "rtx1.7"}),
        ("ParserError.node_operator", {"10.13", "11.4", "rtx1.7"}),
    ],
)
def test_rtx_table_follows_the_wheel(all_tables, entry, present):
    assert {line for line, t in all_tables.items() if t.has(entry)} >= present
    assert not all_tables["rtx1.7"].has(entry) or "rtx1.7" in present


def bad_all(src: str, all_tables) -> set[tuple[str, str]]:
    return bad(src, all_tables)


def test_rtx_line_flags_precision_flags_and_targets_elsewhere(all_tables):
    assert bad_all("config.set_flag(trt.BuilderFlag.FP16)\n", all_tables) == {
        ("trt.BuilderFlag.FP16", "11.4"), ("trt.BuilderFlag.FP16", "rtx1.7")}
    assert bad_all("if ver.has_precision_flags:\n    config.set_flag(trt.BuilderFlag.FP16)\n", all_tables) == set()
    # a major-version guard written for full TensorRT is wrong for RTX (1.x < 10)
    assert bad_all("if ver.major < 11:\n    config.set_flag(trt.BuilderFlag.FP16)\n", all_tables) == {
        ("trt.BuilderFlag.FP16", "rtx1.7")}
    loose = "config.set_compute_capability(trt.ComputeCapability.SM86, 0)\n"
    assert {line for _, line in bad_all(loose, all_tables)} == {"8.6", "10.13", "11.4"}
    guarded = "if ver.has_compute_capabilities:\n    " + loose
    assert bad_all(guarded, all_tables) == set()


def test_rtx_table_matches_the_installed_wheel():
    if importlib.util.find_spec("tensorrt_rtx_bindings") is None:
        pytest.skip("tensorrt-rtx-cu12-bindings 1.7.1 not installed (the Makefile installs it where a wheel exists)")
    text = regen.rtx_table()
    assert text is not None, "the installed TensorRT for RTX is not 1.7"
    assert (HERE / "names_rtx1.7.txt").read_text(encoding="utf-8") == text, "run python tests/tensorrt/api/regen.py"
