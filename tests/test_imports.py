"""Import hygiene: ``import endoedge`` stays light, and every module imports on this machine."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import endoedge

HEAVY = ("torch", "torchvision", "tensorrt", "gi", "pycuda", "cuda")


def _loaded_after(code: str, watch: tuple[str, ...]) -> list[str]:
    """Run ``code`` in a fresh interpreter; return which of ``watch`` ended up in sys.modules."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in {list(watch)!r} if m in sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_endoedge_is_light():
    loaded = _loaded_after("import endoedge; endoedge.__version__", (*HEAVY, "cv2", "onnxruntime", "onnx"))
    assert loaded == []


@pytest.mark.parametrize(
    "code",
    [
        "import endoedge.runtime, endoedge.models, endoedge.export, endoedge.cli",
        "from endoedge.runtime import backend_names; backend_names()",
        "from endoedge.models import arch_names; arch_names()",
        "from endoedge.cli import build_parser; build_parser()",
        "import endoedge; endoedge.load",
    ],
    ids=["subpackages", "backend-registry", "arch-registry", "cli-parser", "detector-api"],
)
def test_subpackages_do_not_import_gpu_or_torch(code):
    assert _loaded_after(code, HEAVY) == []


def _all_modules() -> list[str]:
    names = [endoedge.__name__]
    for info in pkgutil.walk_packages(endoedge.__path__, prefix="endoedge."):
        # `python -m` entry points run the CLI when imported; test_cli runs them in a subprocess.
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.append(info.name)
    return names


def test_walk_finds_the_package_tree():
    names = _all_modules()
    for expected in ("endoedge.detector", "endoedge.runtime.ort", "endoedge.runtime.pytorch",
                     "endoedge.models.checkpoint", "endoedge.export.onnx_export", "endoedge.cli.detect"):
        assert expected in names


@pytest.mark.parametrize("module", _all_modules())
def test_every_module_imports(module):
    importlib.import_module(module)


def test_public_api():
    for name in endoedge.__all__:
        assert getattr(endoedge, name) is not None
    with pytest.raises(AttributeError, match="no_such_thing"):
        endoedge.no_such_thing  # noqa: B018
