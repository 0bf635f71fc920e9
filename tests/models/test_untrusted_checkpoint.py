"""Untrusted checkpoints: every ``torch.load`` in endoedge uses ``weights_only=True`` (audited from
the source), and a checkpoint whose pickle would run code is refused with one line, code not run."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

import endoedge

torch = pytest.importorskip("torch")

SRC = Path(endoedge.__file__).resolve().parent


def test_every_torch_load_is_weights_only():
    calls = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                calls.append((f"{path.relative_to(SRC)}:{node.lineno}", safe))
    assert calls, "no torch.load found: the audit looks in the wrong place"
    assert [where for where, safe in calls if not safe] == []


class _Payload:
    """Unpickling this would create ``marker`` (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_that_runs_code_is_refused(tmp_path, sample_paths, capsys):
    from endoedge.cli import main

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "endoedge", "model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, evil)
    # the oracle: a plain (unsafe) unpickle does run the payload
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()
    shutil.copy(sample_paths[0], tmp_path / "a.jpg")
    rc = main(["detect", str(tmp_path / "a.jpg"), "-m", str(evil), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1
    assert "weights_only" in err[0]
    assert not marker.exists()


def test_training_resume_refuses_a_state_that_runs_code(tmp_path):
    from endoedge.errors import ModelFormatError
    from endoedge.training.trainer import Trainer

    marker = tmp_path / "pwned"
    evil = tmp_path / "train_state.pt"
    torch.save({"class_names": ["polyp"], "x": _Payload(marker)}, evil)
    trainer = Trainer.__new__(Trainer)  # load_state needs only torch and a device
    trainer.torch, trainer.device = torch, "cpu"
    with pytest.raises(ModelFormatError, match="cannot resume") as info:
        trainer.load_state(evil)
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("bad", [{"bogus": 1}, "all"])
def test_checkpoint_with_invalid_stored_cleaning_is_refused_in_one_line(tmp_path, capsys, bad):
    """A checkpoint whose ``endoscopy`` entry is not a valid config fails at load, naming the file and
    the fix, before any frame is processed or any ONNX is written."""
    torch = pytest.importorskip("torch")
    from endoedge.cli import main
    from endoedge.errors import ModelFormatError
    from endoedge.models.checkpoint import load_checkpoint
    from endoedge.models.pretrained import shipped_checkpoint

    obj = torch.load(shipped_checkpoint(), weights_only=True)
    assert isinstance(obj["endoscopy"], dict)  # the shipped detector stores the cleaning it was trained with
    obj["endoscopy"] = bad
    path = tmp_path / "bad.pt"
    torch.save(obj, path)
    with pytest.raises(ModelFormatError, match="stored endoscopy cleaning is invalid"):
        load_checkpoint(path)
    assert main(["export", str(path), "-o", str(tmp_path / "bad.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "delete the 'endoscopy' key" in err[0]
    assert not (tmp_path / "bad.onnx").exists()
