"""The package layout holds: import-linter's contracts pass, break when a rule is broken, no import
cycle between files, no source file over 600 lines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "endoedge"
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.is_file(), reason="needs import-linter (`make test` installs it)")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports with the repository's contracts over the package under ``root/src``."""
    return subprocess.run(
        [str(LINT), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
        env={"PATH": str(LINT.parent), "PYTHONPATH": str(root / "src")},
    )


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(SRC, tmp_path / "src" / "endoedge", ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.jpg"))
    return tmp_path


def test_contracts_kept():
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout or "broken" not in proc.stdout.split("Contracts:")[-1]


@pytest.mark.parametrize(
    ("victim", "bad_import", "contract"),
    [
        ("runtime/ort.py", "from endoedge.export import onnx_export", "Runtime and models never import"),
        ("data/samples.py", "from endoedge.detector import Detector", "Layers"),
        ("evaluation/runner.py", "from endoedge.calibration import compare", "Layers"),
        ("runtime/ort.py", "import tensorrt", "TensorRT's Python API"),
        ("pipeline/clip.py", "from endoedge.cli import _common", "Nothing but the CLI"),
        ("runtime/tensorrt.py", "from endoedge.tensorrt.build import build_engine", "runs engines only"),
    ],
)
def test_a_broken_rule_fails(tmp_path, victim, bad_import, contract):
    root = _copy(tmp_path)
    target = root / "src" / "endoedge" / victim
    target.write_text(target.read_text() + f"\n\ndef _bad() -> None:\n    {bad_import}  # noqa\n")
    proc = _lint(root)
    assert proc.returncode != 0
    broken = proc.stdout.split("Broken contracts")[-1]
    assert contract in broken


def test_no_import_cycle_between_files():
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter")
    graph = grimp.build_graph("endoedge")
    mods = sorted(m for m in graph.modules if m.startswith("endoedge"))
    adj = {m: [x for x in graph.find_modules_directly_imported_by(m) if x.startswith("endoedge")] for m in mods}
    cycles = [sorted(c) for c in _strongly_connected(adj) if len(c) > 1]
    assert cycles == []


def _strongly_connected(adj: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in adj:
        if root in index:
            continue
        work = [(root, iter(adj[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(adj.get(w, []))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(comp)
    return out


def test_cycle_finder_finds_a_cycle():
    assert sorted(map(sorted, _strongly_connected({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}))) == [
        ["a", "b", "c"], ["d"]]


def test_no_source_file_over_600_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}
