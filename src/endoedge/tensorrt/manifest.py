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

Loading checks it against this machine (:func:`stale_field` / :func:`verify_manifest`) and
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endoedge._version import __version__
from endoedge.errors import ModelFormatError, StaleEngineError
from endoedge.tensorrt.compat import TrtVersion
from endoedge.tensorrt.gpu_info import GpuInfo

FORMAT = "endoedge-engine-manifest/1"
REQUIRED = ("format", "onnx_sha256", "trt_version", "gpu", "precision", "profiles", "io", "spec")
CACHE_FIELDS = ("onnx_sha256", "trt_version", "gpu", "precision", "int8_source", "profiles", "dla_core",
                "calibration_hash", "version_compatible", "hardware_compatibility")


@dataclass(frozen=True)
class MachineInfo:
    """Where an engine is built or loaded: TensorRT version string, GPU, JetPack/L4T (``None`` off Jetson)."""

    trt_version: str
    gpu: GpuInfo
    jetpack: str | None = None
    l4t: str | None = None


def machine_info(trt_version: str, gpu: GpuInfo, *, root: str | Path | None = None) -> MachineInfo:
    """:class:`MachineInfo` with JetPack/L4T read by :func:`endoedge.jetson.platform.jetson_info`."""
    from endoedge.jetson.platform import jetson_info

    info = jetson_info(root)
    return MachineInfo(trt_version, gpu, info["jetpack"] if info else None, info["l4t"] if info else None)


def manifest_path(engine_path: str | Path) -> Path:
    """``polyp.engine`` -> ``polyp.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def make_manifest(
    *,
    onnx_path: str | Path,
    onnx_sha256: str,
    machine: MachineInfo,
    precision: str,
    int8_source: str | None,
    calibration_hash: str | None,
    profiles: list[dict[str, dict[str, list[int]]]],
    io: list[dict[str, Any]],
    version_compatible: bool,
    hardware_compatibility: str,
    dla_core: int | None,
    spec: dict[str, str],
) -> dict[str, Any]:
    """The manifest dict (keys in the module docstring's order)."""
    return {
        "format": FORMAT,
        "endoedge_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "onnx_sha256": onnx_sha256,
        "onnx_path": str(Path(onnx_path).resolve()),
        "trt_version": machine.trt_version,
        "gpu": machine.gpu.to_dict(),
        "jetpack": machine.jetpack,
        "l4t": machine.l4t,
        "precision": precision,
        "int8_source": int8_source,
        "calibration_hash": calibration_hash,
        "profiles": profiles,
        "io": io,
        "version_compatible": bool(version_compatible),
        "hardware_compatibility": hardware_compatibility,
        "dla_core": dla_core,
        "spec": dict(spec),
    }


def write_manifest(engine_path: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``<engine>.json`` atomically (temp file + rename); returns its path."""
    path = manifest_path(engine_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(engine_path: str | Path) -> dict[str, Any]:
    """Read and sanity-check an engine's manifest.

    Raises:
        ModelFormatError: no manifest (the message says how to make one), unreadable, or not
            an endoedge engine manifest.
    """
    engine = Path(engine_path)
    path = manifest_path(engine)
    if not path.is_file():
        raise ModelFormatError(
            f"engine '{engine}' has no manifest '{path.name}', so its TensorRT/GPU and pre-processing are "
            f"unknown; build it with `endoedge build MODEL.onnx -o {engine}` (which writes both)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelFormatError(f"engine manifest '{path}' cannot be read ({err}); rebuild the engine") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFormatError(
            f"'{path}' is not an {FORMAT} file (format {data.get('format') if isinstance(data, dict) else None!r}); "
            "rebuild the engine with `endoedge build`"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ModelFormatError(f"engine manifest '{path}' lacks {', '.join(missing)}; rebuild the engine")
    return data


def _vc_runtime_ok(built: TrtVersion, here: TrtVersion) -> bool:
    """Version-compatible engines: a later runtime of the same major, or 8 -> 10 and 10 -> 11 (NVIDIA)."""
    if here < built:
        return False
    return here.major == built.major or (built.major, here.major) in ((8, 10), (10, 11))


def stale_field(manifest: dict[str, Any], machine: MachineInfo, *,
                onnx_sha256: str | None = None) -> tuple[str, Any, Any] | None:
    """The first field where ``manifest`` does not fit ``machine``: ``(field, engine's, here)``.

    ``onnx_sha256`` is the current sha256 of the ONNX the engine was built from (``None`` = not
    checked, e.g. the ONNX is not on this machine). Version-compatible engines accept later
    runtimes per NVIDIA's rules; ``ampere+`` engines any Ampere+ discrete GPU; ``same-cc``
    engines any GPU of the same compute capability.
    """
    built_v = TrtVersion.parse(str(manifest["trt_version"]))
    here_v = TrtVersion.parse(machine.trt_version)
    if manifest.get("version_compatible"):
        if not _vc_runtime_ok(built_v, here_v):
            return "trt_version", manifest["trt_version"], machine.trt_version
    elif str(manifest["trt_version"]) != machine.trt_version:
        return "trt_version", manifest["trt_version"], machine.trt_version
    gpu = dict(manifest.get("gpu") or {})
    here = machine.gpu.to_dict()
    hc = manifest.get("hardware_compatibility") or "none"
    if hc == "ampere+":
        if machine.gpu.cc_tuple < (8, 0) or machine.l4t is not None:
            return "gpu.compute_capability", f"{gpu.get('compute_capability')} (ampere+)", here["compute_capability"]
    else:
        checked = ("compute_capability",) if hc == "same-cc" else ("name", "compute_capability", "sm_count")
        for key in checked:
            if gpu.get(key) != here[key]:
                return f"gpu.{key}", gpu.get(key), here[key]
    for key in ("l4t", "jetpack"):
        if manifest.get(key) != getattr(machine, key):
            return key, manifest.get(key), getattr(machine, key)
    if onnx_sha256 is not None and manifest.get("onnx_sha256") != onnx_sha256:
        return "onnx_sha256", str(manifest.get("onnx_sha256"))[:12], onnx_sha256[:12]
    return None


def rebuild_hint(manifest: dict[str, Any], engine_path: str | Path) -> str:
    """``endoedge build ONNX --precision P -o ENGINE --force`` for this engine."""
    onnx = manifest.get("onnx_path") or "MODEL.onnx"
    return f"endoedge build {onnx} --precision {manifest.get('precision', 'fp32')} -o {engine_path} --force"


def verify_manifest(manifest: dict[str, Any], machine: MachineInfo, *, engine_path: str | Path,
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


def cache_key(fields: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of the identity fields (:data:`CACHE_FIELDS`), canonical JSON.

    ``fields`` may be a whole manifest; keys outside :data:`CACHE_FIELDS` (creation time, paths,
    the spec) do not change the key.
    """
    ident = {k: fields.get(k) for k in CACHE_FIELDS}
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"))
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
