"""The engine manifest (``<engine>.json``) and the engine cache key; no TensorRT needed.

An engine is only valid for the TensorRT version, GPU and platform it was built on and for the
ONNX it was built from (stale engines are the most common TensorRT complaint: "Version tag does
not match", "engine plan file is generated on an incompatible device", an old engine silently
used after re-export). ``endoedge build`` writes, beside ``polyp.engine``, ``polyp.engine.json``::

    {"format": "endoedge-engine-manifest/1", "endoedge_version", "created", "onnx_sha256",
     "onnx_path", "trt_version", "gpu": {"name", "compute_capability", "sm_count"},
     "jetpack", "l4t", "precision", "int8_source", "calibration_hash",
     "profiles": [{"images": {"min": [1,3,320,320], "opt": [...], "max": [...]}}],
     "io": [{"name", "mode": "input"|"output", "dtype": "float32", "shape": [-1,3,320,320]}],
     "version_compatible", "hardware_compatibility", "dla_core", "spec": {ONNX metadata_props}}

:class:`~endoedge.tensorrt.engine_manifest.EngineManifest` is the typed record of that object
(:func:`read_manifest` returns one, :func:`write_manifest` writes one; the file format is
unchanged). Loading checks it against this machine (:func:`stale_field` / :func:`verify_manifest`) and
refuses a mismatch with one line naming the field, both values and how to rebuild. The cache
key (:func:`cache_key`) hashes the same identity fields, as HoloHub keys its engine cache by GPU
name, compute capability, SM count and TensorRT version, plus the ONNX sha256 (jetson-inference),
precision, profiles, DLA core, calibration data and compatibility flags.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from endoedge._version import __version__
from endoedge.errors import ModelFormatError, StaleEngineError
from endoedge.tensorrt.compat import TrtVersion
from endoedge.tensorrt.engine_manifest import (
    CACHE_FIELDS,
    FORMAT,
    REQUIRED,
    EngineIdentity,
    EngineManifest,
    Profile,
    ShapeRange,
    TensorIO,
)
from endoedge.tensorrt.gpu_info import GpuInfo

__all__ = [
    "CACHE_FIELDS", "FORMAT", "REQUIRED", "EngineIdentity", "EngineManifest", "MachineInfo", "Profile", "ShapeRange",
    "TensorIO", "cache_key", "cached_engine_path", "default_cache_dir", "find_manifest", "load_manifest",
    "machine_info", "make_manifest", "manifest_path", "read_manifest", "rebuild_hint", "stale_field",
    "verify_engine", "verify_manifest", "write_manifest",
]


@dataclass(frozen=True)
class MachineInfo:
    """Where an engine is built or loaded: TensorRT version string, GPU, JetPack/L4T (``None`` off Jetson)."""

    trt_version: str
    gpu: GpuInfo
    jetpack: str | None = None
    l4t: str | None = None
    flavour: str = "tensorrt"


def machine_info(trt_version: str, gpu: GpuInfo, *, root: str | Path | None = None) -> MachineInfo:
    """:class:`MachineInfo` with JetPack/L4T read by :func:`endoedge.jetson.platform.jetson_info`."""
    from endoedge.jetson.platform import jetson_info

    info = jetson_info(root)
    return MachineInfo(trt_version, gpu, info["jetpack"] if info else None, info["l4t"] if info else None)


def manifest_path(engine_path: str | Path) -> Path:
    """``polyp.engine`` -> ``polyp.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def find_manifest(engine_path: str | Path) -> Path | None:
    """``<engine>.json`` (what ``endoedge build`` writes), else ``<engine stem>.json``; ``None`` if neither exists."""
    engine = Path(engine_path)
    for cand in (manifest_path(engine), engine.with_suffix(".json")):
        if cand.is_file():
            return cand
    return None


def make_manifest(
    *,
    onnx_path: str | Path,
    onnx_sha256: str,
    machine: MachineInfo,
    precision: str,
    int8_source: str | None,
    calibration_hash: str | None,
    profiles: Sequence[Profile],
    io: Sequence[TensorIO],
    version_compatible: bool,
    hardware_compatibility: str,
    dla_core: int | None,
    spec: Mapping[str, str],
    flavour: str = "tensorrt",
    compute_capabilities: Sequence[str] = (),
) -> EngineManifest:
    """The manifest of an engine built now, by this endoedge, on ``machine``."""
    return EngineManifest(
        endoedge_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        onnx_sha256=onnx_sha256,
        onnx_path=str(Path(onnx_path).resolve()),
        trt_version=machine.trt_version,
        flavour=flavour,
        compute_capabilities=tuple(compute_capabilities),
        gpu=machine.gpu,
        jetpack=machine.jetpack,
        l4t=machine.l4t,
        precision=precision,
        int8_source=int8_source,
        calibration_hash=calibration_hash,
        profiles=tuple(profiles),
        io=tuple(io),
        version_compatible=bool(version_compatible),
        hardware_compatibility=hardware_compatibility,
        dla_core=dla_core,
        spec=dict(spec),
    )


def write_manifest(engine_path: str | Path, manifest: EngineManifest) -> Path:
    """Write ``<engine>.json`` atomically (temp file + rename); returns its path."""
    path = manifest_path(engine_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _build_command(engine: Path, onnx: object = None) -> str:
    return f"endoedge build {onnx if isinstance(onnx, str) and onnx else 'MODEL.onnx'} -o {engine} --force"


def load_manifest(path: str | Path, *, engine: str | Path, partial: bool = False) -> EngineManifest:
    """Read the manifest file ``path`` of ``engine`` (see :meth:`EngineManifest.from_dict` for ``partial``).

    Raises:
        ModelFormatError: unreadable, not an endoedge engine manifest, or incomplete (one line
            naming the file and the ``endoedge build`` command that rebuilds the engine).
    """
    path, engine = Path(path), Path(engine)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: deeply nested JSON
        raise ModelFormatError(f"engine manifest '{path}' cannot be read ({err}); rebuild the engine with "
                               f"`{_build_command(engine)}`") from err
    onnx = data.get("onnx_path") if isinstance(data, dict) else None
    return EngineManifest.from_dict(data, source=f"engine manifest '{path}'", rebuild=_build_command(engine, onnx),
                                    partial=partial)


def read_manifest(engine_path: str | Path) -> EngineManifest:
    """Read and sanity-check an engine's manifest (``<engine>.json``).

    Raises:
        ModelFormatError: no manifest (the message says how to make one), unreadable, or not
            a complete endoedge engine manifest.
    """
    engine = Path(engine_path)
    path = manifest_path(engine)
    if not path.is_file():
        raise ModelFormatError(
            f"engine '{engine}' has no manifest '{path.name}', so its TensorRT/GPU and pre-processing are "
            f"unknown; build it with `endoedge build MODEL.onnx -o {engine}` (which writes both)"
        )
    return load_manifest(path, engine=engine)


def _vc_runtime_ok(built: TrtVersion, here: TrtVersion) -> bool:
    """Version-compatible engines: a later runtime of the same major, or 8 -> 10 and 10 -> 11 (NVIDIA)."""
    if here < built:
        return False
    return here.major == built.major or (built.major, here.major) in ((8, 10), (10, 11))


def stale_field(manifest: EngineManifest, machine: MachineInfo, *,
                onnx_sha256: str | None = None) -> tuple[str, object, object] | None:
    """The first field where ``manifest`` does not fit ``machine``: ``(field, engine's, here)``.

    ``onnx_sha256`` is the current sha256 of the ONNX the engine was built from (``None`` = not
    checked, e.g. the ONNX is not on this machine). Version-compatible engines accept later
    runtimes per NVIDIA's rules; ``ampere+`` engines any Ampere+ discrete GPU; ``same-cc``
    engines any GPU of the same compute capability. TensorRT for RTX engines need TensorRT for
    RTX of the same version and a GPU among their targets (not checked where ``machine`` has no
    GPU: an ahead-of-time build).
    """
    if manifest.flavour != machine.flavour:
        return "flavour", manifest.flavour, machine.flavour
    if manifest.flavour == "rtx":
        return _stale_rtx(manifest, machine, onnx_sha256)
    built_v = TrtVersion.parse(manifest.trt_version)
    here_v = TrtVersion.parse(machine.trt_version)
    if manifest.version_compatible:
        if not _vc_runtime_ok(built_v, here_v):
            return "trt_version", manifest.trt_version, machine.trt_version
    elif manifest.trt_version != machine.trt_version:
        return "trt_version", manifest.trt_version, machine.trt_version
    gpu = manifest.gpu.to_dict()
    here = machine.gpu.to_dict()
    hc = manifest.hardware_compatibility or "none"
    if hc == "ampere+":
        if machine.gpu.cc_tuple < (8, 0) or machine.l4t is not None:
            return "gpu.compute_capability", f"{gpu['compute_capability']} (ampere+)", here["compute_capability"]
    else:
        checked = ("compute_capability",) if hc == "same-cc" else ("name", "compute_capability", "sm_count")
        for key in checked:
            if gpu[key] != here[key]:
                return f"gpu.{key}", gpu[key], here[key]
    for key in ("l4t", "jetpack"):
        if getattr(manifest, key) != getattr(machine, key):
            return key, getattr(manifest, key), getattr(machine, key)
    if onnx_sha256 is not None and manifest.onnx_sha256 != onnx_sha256:
        return "onnx_sha256", manifest.onnx_sha256[:12], onnx_sha256[:12]
    return None


def _stale_rtx(manifest: EngineManifest, machine: MachineInfo,
               onnx_sha256: str | None) -> tuple[str, object, object] | None:
    from endoedge.tensorrt.rtx import gpu_fits, targets_text

    if manifest.trt_version != machine.trt_version:
        return "trt_version", manifest.trt_version, machine.trt_version
    if machine.gpu.compute_capability and not gpu_fits(manifest.compute_capabilities, machine.gpu):
        return ("compute_capabilities", targets_text(manifest.compute_capabilities),
                f"{machine.gpu.name} (cc {machine.gpu.compute_capability})")
    if onnx_sha256 is not None and manifest.onnx_sha256 != onnx_sha256:
        return "onnx_sha256", manifest.onnx_sha256[:12], onnx_sha256[:12]
    return None


def rebuild_hint(manifest: EngineManifest, engine_path: str | Path) -> str:
    """``endoedge build ONNX --precision P -o ENGINE --force`` for this engine (RTX: with its runtime and targets)."""
    onnx = manifest.onnx_path or "MODEL.onnx"
    rtx = ""
    if manifest.flavour == "rtx":
        rtx = " --runtime rtx" + (f" --compute-capability {','.join(manifest.compute_capabilities)}"
                                  if manifest.compute_capabilities else "")
    return f"endoedge build {onnx} --precision {manifest.precision or 'fp32'}{rtx} -o {engine_path} --force"


def verify_manifest(manifest: EngineManifest, machine: MachineInfo, *, engine_path: str | Path,
                    onnx_sha256: str | None = None) -> None:
    """Raise :class:`~endoedge.errors.StaleEngineError` (one line) when the engine does not fit here."""
    found = stale_field(manifest, machine, onnx_sha256=onnx_sha256)
    if found is None:
        return
    name, built, here = found
    what = "the ONNX it was built from changed since" if name == "onnx_sha256" else "this machine has"
    raise StaleEngineError(
        f"engine '{Path(engine_path).name}' is stale: {name} is {built!r} in the engine but {what} "
        f"{here!r}; rebuild it with `{rebuild_hint(manifest, engine_path)}` or pass --rebuild-if-stale"
    )


def verify_engine(engine_path: str | Path, manifest: EngineManifest, machine: MachineInfo) -> None:
    """:func:`verify_manifest`, with the ONNX checked too when the file it names is on this machine."""
    from endoedge.data.hashing import file_sha256

    onnx = Path(manifest.onnx_path or "")
    sha = file_sha256(onnx) if manifest.onnx_path and onnx.is_file() else None
    verify_manifest(manifest, machine, engine_path=engine_path, onnx_sha256=sha)


def cache_key(fields: EngineIdentity | EngineManifest) -> str:
    """16 hex digits of the sha256 of the identity fields (:data:`CACHE_FIELDS`), canonical JSON.

    ``fields`` may be a whole manifest; what lies outside :data:`CACHE_FIELDS` (creation time,
    paths, the spec) does not change the key.
    """
    ident = (fields.identity if isinstance(fields, EngineManifest) else fields).to_dict()
    text = json.dumps({k: ident[k] for k in CACHE_FIELDS if k in ident}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def cached_engine_path(cache_dir: str | Path, onnx_path: str | Path, precision: str, key: str) -> Path:
    """``<cache_dir>/<onnx stem>.<precision>.<key>.engine`` (its manifest lies beside it)."""
    return Path(cache_dir) / f"{Path(onnx_path).stem}.{precision}.{key}.engine"


def default_cache_dir() -> Path:
    """``$ENDOEDGE_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/endoedge/engines`` (``~/.cache/...``)."""
    env = os.environ.get("ENDOEDGE_ENGINE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "endoedge" / "engines"
