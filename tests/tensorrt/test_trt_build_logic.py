"""``build_engine`` orchestration against FAKE TensorRT modules, one per line (8.6 / 10.3 / 10.16 / 11.4).

FAKES, CLEARLY: ``fake_trt(version)`` builds a stand-in module that has only the names the
reference notes say that line has (e.g. no ``BuilderFlag.FP16``, ``EXPLICIT_BATCH`` or
``IInt8EntropyCalibrator2`` on 11.x), so touching a removed name raises ``AttributeError``
here, and it records what endoedge set. This checks endoedge's orchestration (flags per line,
cache reuse, manifest, ``--force``, calibrator feeding, timing cache, error messages); it
verifies nothing about TensorRT itself (tests/test_trt_gpu.py does, where TensorRT exists).
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from endoedge.errors import EngineBuildError, InputError
from endoedge.spec import spec_for_foreign_yolo
from endoedge.tensorrt.build import build_engine
from endoedge.tensorrt.compat import TrtVersion
from endoedge.tensorrt.manifest import read_manifest
from endoedge.tensorrt.plan import BuildRequest
from tests.tensorrt.test_trt_manifest import tiny_onnx
from tests.tensorrt.test_trt_runtime_logic import FakeCuda


def _enum(*names):
    return types.SimpleNamespace(**{n: i for i, n in enumerate(names)})


def fake_trt(version: str, *, parse_ok=True, build_ok=True):
    """FAKE ``tensorrt`` module with the names of ``version``'s line only (see the module docstring)."""
    v = TrtVersion.parse(version)
    record: dict = {"flags": set(), "network_flags": None, "profiles": [], "calib_profile": None, "pool": {}}
    net_flags = (["EXPLICIT_BATCH"] if v.major < 11 else []) + (["STRONGLY_TYPED"] if v.major >= 10 else [])
    builder_flags = (["FP16", "INT8"] if v.major < 11 else []) + ["GPU_FALLBACK", "VERSION_COMPATIBLE"]
    hw = ["NONE", "AMPERE_PLUS"] + (["SAME_COMPUTE_CAPABILITY"] if v >= TrtVersion(10, 9) else [])
    allowed_config = {"default_device_type", "DLA_core", "hardware_compatibility_level"} | (
        {"int8_calibrator"} if v.major <= 10 else set())

    class ILogger:
        def __init__(self):
            pass

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape, self.dtype = name, shape, "float"

    class Network:
        num_inputs, num_outputs = 1, 1

        def get_input(self, i):
            return Tensor("images", (-1, 3, 32, 32))

        def get_output(self, i):
            return Tensor("out", (-1, 4, 30, 30))

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 2

        def parse_from_file(self, path):
            return parse_ok

        def get_error(self, i):
            return f"In node {i} (Conv): UNSUPPORTED_NODE"

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (list(lo), list(opt), list(hi))

    class TimingCache:
        def serialize(self):
            return b"timing-cache"

    class Config:
        def __setattr__(self, key, value):
            if key not in allowed_config:
                raise AttributeError(f"FAKE {version}: IBuilderConfig has no '{key}'")
            record[key] = value

        def set_flag(self, flag):
            record["flags"].add(flag)

        def set_memory_pool_limit(self, pool, nbytes):
            record["pool"][pool] = nbytes

        def add_optimization_profile(self, p):
            record["profiles"].append(p.shapes)

        def create_timing_cache(self, buf):
            record["timing_in"] = buf
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            record["timing_ignore_mismatch"] = ignore_mismatch

        def get_timing_cache(self):
            return TimingCache()

    if v.major <= 10:
        def set_calibration_profile(self, p):
            record["calib_profile"] = p.shapes
        Config.set_calibration_profile = set_calibration_profile

    class Builder:
        num_DLA_cores = 2

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            record["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calib = record.get("int8_calibrator")
            if calib is not None:  # what TensorRT does with a calibrator, roughly: pull batches, then cache
                record["calib_cache_in"] = calib.read_calibration_cache()
                names, seen = ["images"], []
                while (ptrs := calib.get_batch(names)) is not None:
                    seen.append(CUDA_BOX[0].mem[ptrs[0]][: 4 * 3 * 32 * 32 * 4].view(np.float32).copy())
                record["calib_batches"] = seen
                calib.write_calibration_cache(b"calibration-table")
            if not build_ok:
                self.logger.log(1, "Error Code 4: out of workspace memory")
                return None
            return b"PLAN" + bytes([record["network_flags"]])

    mod = types.SimpleNamespace(
        __version__=version, ILogger=ILogger, Builder=Builder, OnnxParser=Parser,
        NetworkDefinitionCreationFlag=_enum(*net_flags), BuilderFlag=_enum(*builder_flags),
        MemoryPoolType=_enum("WORKSPACE"), DeviceType=_enum("GPU", "DLA"),
        HardwareCompatibilityLevel=_enum(*hw), init_libnvinfer_plugins=lambda logger, ns: True,
        nptype=lambda dt: np.float32, record=record)
    if v.major <= 10:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass
        mod.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return mod


CUDA_BOX: list = [None]


@pytest.fixture
def use_fake(monkeypatch):
    """Install a FAKE trt (per call) and FAKE CUDA."""
    def install(version, **kw):
        trt = fake_trt(version, **kw)
        CUDA_BOX[0] = FakeCuda()
        monkeypatch.setattr("endoedge.tensorrt.build.import_tensorrt", lambda: trt)
        monkeypatch.setattr("endoedge.tensorrt.cuda_mem.open_cuda", lambda index, prefer: CUDA_BOX[0])
        return trt
    return install


@pytest.fixture
def onnx_pair(tmp_path):
    meta = spec_for_foreign_yolo("yolov8", ("polyp",), (32, 32)).to_metadata()
    return (tiny_onnx(tmp_path / "m.onnx", meta=meta), tiny_onnx(tmp_path / "m16.onnx", fp16=True, meta=meta))


@pytest.mark.parametrize(("version", "which", "precision", "flags", "net"), [
    ("8.6.1", 0, "fp16", {"FP16"}, {"EXPLICIT_BATCH"}),
    ("10.3.0", 0, "fp16", {"FP16"}, set()),
    ("10.3.0", 1, "fp16", set(), {"STRONGLY_TYPED"}),
    ("10.16.1", 0, "fp32", set(), set()),
    ("11.4.0", 1, "fp16", set(), set()),  # always strongly typed: no flag set, none of the removed names touched
])
def test_flags_per_line_and_manifest(use_fake, onnx_pair, tmp_path, version, which, precision, flags, net):
    trt = use_fake(version)
    engine = tmp_path / "m.engine"
    result = build_engine(onnx_pair[which], engine, BuildRequest(precision=precision, workspace_mib=64))
    rec = trt.record
    names = {getattr(trt.BuilderFlag, n): n for n in vars(trt.BuilderFlag)}
    assert {names[f] for f in rec["flags"]} == flags
    bits = {n for n in vars(trt.NetworkDefinitionCreationFlag)
            if rec["network_flags"] & (1 << getattr(trt.NetworkDefinitionCreationFlag, n))}
    assert bits == net
    assert rec["pool"] == {trt.MemoryPoolType.WORKSPACE: 64 << 20}
    assert rec["profiles"] == [{"images": ([1, 3, 32, 32], [1, 3, 32, 32], [8, 3, 32, 32])}]
    m = read_manifest(engine)
    assert engine.read_bytes().startswith(b"PLAN")
    assert (m.trt_version, m.precision, m.gpu.name, m.l4t) == (version, precision, "Fake GPU", None)
    assert m.io[0].to_dict() == {"name": "images", "mode": "input", "dtype": "float32", "shape": [-1, 3, 32, 32]}
    assert m.spec["endoedge.decoder"] == "yolov8"
    assert not result.reused
    assert CUDA_BOX[0].closed


def test_cache_builds_once_and_keys_on_options(use_fake, onnx_pair, tmp_path):
    use_fake("10.3.0")
    cache = tmp_path / "cache"
    first = build_engine(onnx_pair[0], None, BuildRequest(precision="fp16"), cache_dir=cache)
    again = build_engine(onnx_pair[0], None, BuildRequest(precision="fp16"), cache_dir=cache)
    assert not first.reused
    assert again.reused
    assert again.engine_path == first.engine_path
    other = build_engine(onnx_pair[0], None, BuildRequest(precision="fp16", batch=(1, 4, 16)), cache_dir=cache)
    assert other.engine_path != first.engine_path
    assert len(list(cache.glob("*.engine"))) == 2
    forced = build_engine(onnx_pair[0], None, BuildRequest(precision="fp16"), cache_dir=cache, force=True)
    assert not forced.reused
    assert forced.engine_path == first.engine_path
    copy = build_engine(onnx_pair[0], tmp_path / "out.engine", BuildRequest(precision="fp16"), cache_dir=cache)
    assert copy.reused
    assert (tmp_path / "out.engine").read_bytes() == first.engine_path.read_bytes()
    assert read_manifest(tmp_path / "out.engine").onnx_sha256 == first.manifest.onnx_sha256


def test_existing_engine_for_other_options_needs_force(use_fake, onnx_pair, tmp_path):
    use_fake("10.3.0")
    engine = tmp_path / "m.engine"
    build_engine(onnx_pair[0], engine, BuildRequest(precision="fp32"))
    assert build_engine(onnx_pair[0], engine, BuildRequest(precision="fp32")).reused
    with pytest.raises(InputError, match="exists and was built from another .*--force"):
        build_engine(onnx_pair[0], engine, BuildRequest(precision="fp16"))
    assert read_manifest(build_engine(onnx_pair[0], engine, BuildRequest(precision="fp16"), force=True).engine_path
                         ).precision == "fp16"


def test_calibrator_feeds_batches_and_keeps_its_cache(use_fake, onnx_pair, tmp_path, frames):
    import cv2

    trt = use_fake("10.3.0")
    batches = [np.stack([cv2.resize(f, (32, 32)).transpose(2, 0, 1) for f in frames[i:i + 2]]).astype(np.float32) / 255
               for i in (0, 2, 3)]  # the last one is short (1 image): dropped, as TensorRT needs full batches
    data = type("Data", (), {"content_hash": "frames-v1", "__iter__": lambda self: iter([{"images": b} for b in batches])})()
    cache = tmp_path / "calib.cache"
    req = BuildRequest(precision="int8", calib=True, calib_batch=2)
    result = build_engine(onnx_pair[0], tmp_path / "q.engine", req, calibration=lambda: data, calib_cache=cache)
    rec = trt.record
    assert rec["calib_profile"] == {"images": ([2, 3, 32, 32], [2, 3, 32, 32], [2, 3, 32, 32])}
    assert len(rec["calib_batches"]) == 2
    for got, want in zip(rec["calib_batches"], batches[:2], strict=True):
        np.testing.assert_array_equal(got[: want.size], want.ravel())  # what reached "device" memory
    assert cache.read_bytes() == b"calibration-table"
    assert result.manifest.int8_source == "calibrator"
    assert result.manifest.calibration_hash == "frames-v1"
    trt2 = use_fake("10.3.0")
    build_engine(onnx_pair[0], tmp_path / "q2.engine", req, calibration=lambda: data, calib_cache=cache)
    assert trt2.record["calib_cache_in"] == b"calibration-table"  # reused: same data, batch, TensorRT


def test_timing_cache_round_trip(use_fake, onnx_pair, tmp_path):
    trt = use_fake("10.16.1")
    tc = tmp_path / "timing.cache"
    build_engine(onnx_pair[0], tmp_path / "m.engine", BuildRequest(), timing_cache=tc)
    assert tc.read_bytes() == b"timing-cache"
    assert trt.record["timing_in"] == b""
    assert trt.record["timing_ignore_mismatch"] is True


def test_parser_and_builder_failures_are_one_line(use_fake, onnx_pair, tmp_path):
    use_fake("10.3.0", parse_ok=False)
    with pytest.raises(EngineBuildError, match=r"ONNX parser rejected 'm.onnx': In node 0 \(Conv\).* \| In node 1"):
        build_engine(onnx_pair[0], tmp_path / "m.engine", BuildRequest())
    use_fake("10.3.0", build_ok=False)
    with pytest.raises(EngineBuildError, match="could not build 'm.onnx' \\(fp32\\): Error Code 4: out of workspace"):
        build_engine(onnx_pair[0], tmp_path / "m.engine", BuildRequest())
    assert not (tmp_path / "m.engine").exists()


def test_line_specific_refusal_after_import(use_fake, onnx_pair, tmp_path):
    use_fake("11.4.0")
    with pytest.raises(EngineBuildError, match="TensorRT 11.4.0 builds are strongly typed, so FP16 needs an FP16 ONNX"):
        build_engine(onnx_pair[0], tmp_path / "m.engine", BuildRequest(precision="fp16"))
    use_fake("10.3.0")
    with pytest.raises(EngineBuildError, match="not a Jetson"):
        build_engine(onnx_pair[1], tmp_path / "m.engine", BuildRequest(precision="fp16", dla_core=0))


def test_calibration_data_from_endoedge_calibration_feeds_the_calibrator(use_fake, onnx_pair, tmp_path):
    """`endoedge build --calib FOLDER`'s loader: the real endoedge.calibration data, through the
    (FAKE) TensorRT calibrator; the bytes that reach "device" memory are the calibration batches."""
    import argparse
    from pathlib import Path

    from endoedge.calibration import load_calibration_data
    from endoedge.cli.build import _calibration_loader
    from endoedge.data.onnx_facts import onnx_facts
    from endoedge.spec import ModelSpec

    folder = Path(__file__).resolve().parents[2] / "src" / "endoedge" / "assets" / "holohub"
    facts = onnx_facts(onnx_pair[0])
    args = argparse.Namespace(calib=str(folder), calib_images=6, calib_batch=2, calib_split=None)
    load = _calibration_loader(args, facts)
    trt = use_fake("10.3.0")
    req = BuildRequest(precision="int8", calib=True, calib_batch=2)
    result = build_engine(onnx_pair[0], tmp_path / "c.engine", req, calibration=load)
    want = load_calibration_data(folder, ModelSpec.from_metadata(facts.metadata), num_images=6, batch_size=2)
    fed = trt.record["calib_batches"]
    assert len(fed) == len(want) == 3
    for got, batch in zip(fed, want, strict=True):
        np.testing.assert_array_equal(got[: batch["images"].size], batch["images"].ravel())
    assert result.manifest.calibration_hash == want.content_hash
