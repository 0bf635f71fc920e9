"""The engine manifest as typed records (:class:`EngineManifest`) <-> its JSON object; no files, no TensorRT.

:meth:`EngineManifest.to_dict` gives exactly the object ``endoedge build`` has always written
(same keys, same order, same JSON types; see :mod:`endoedge.tensorrt.manifest` for the file),
and :meth:`EngineManifest.from_dict` reads it back, so ``from_dict(d).to_dict() == d`` for every
manifest the writer produced. Shapes are in elements, ``-1`` for a dynamic axis; the batch is
axis 0.

Engines of TensorRT for RTX add two keys after ``trt_version``: ``"flavour": "rtx"`` and
``"compute_capabilities": ["8.6", "8.9"]`` (the ahead-of-time targets; ``[]`` = its Ampere+
default); their ``gpu`` record is :data:`endoedge.tensorrt.rtx.AOT_GPU`-like (no GPU built
them). Full TensorRT manifests do not carry the two keys (absent = ``"tensorrt"``), so their
files and cache keys are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from endoedge.errors import ModelFormatError
from endoedge.tensorrt.gpu_info import GpuInfo

FORMAT = "endoedge-engine-manifest/1"
# Keys a complete manifest must have (the reader refuses one without them).
REQUIRED = ("format", "onnx_sha256", "trt_version", "gpu", "precision", "profiles", "io", "spec")
# The identity fields: two engines with the same values are interchangeable (the cache key hashes them).
# ``flavour`` / ``compute_capabilities`` take part only where present (TensorRT for RTX).
CACHE_FIELDS = ("onnx_sha256", "trt_version", "gpu", "precision", "int8_source", "profiles", "dla_core",
                "calibration_hash", "version_compatible", "hardware_compatibility", "flavour",
                "compute_capabilities")
FLAVOURS = ("tensorrt", "rtx")
DEFAULT_REBUILD = "endoedge build MODEL.onnx -o MODEL.engine --force"

# What json.loads gives (and json.dumps takes) for a manifest value.
Json: TypeAlias = str | int | float | bool | None | list["Json"] | dict[str, "Json"]


class _Bad(ValueError):
    """One field of a manifest object is missing or of the wrong type (the text names it)."""


@dataclass(frozen=True)
class ShapeRange:
    """An optimization-profile range of one input: ``min`` / ``opt`` / ``max`` shapes (elements)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, Json]:
        """``{"min": [...], "opt": [...], "max": [...]}``."""
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


# One optimization profile: input name -> its shape range.
Profile = Mapping[str, ShapeRange]


@dataclass(frozen=True)
class TensorIO:
    """One engine I/O tensor: name, ``input``/``output``, numpy dtype name, shape (``-1`` = dynamic)."""

    name: str
    mode: str
    dtype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Json]:
        """``{"name", "mode", "dtype", "shape"}``."""
        return {"name": self.name, "mode": self.mode, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class EngineIdentity:
    """What makes two engines interchangeable: the :data:`CACHE_FIELDS` (hashed by ``cache_key``)."""

    onnx_sha256: str
    trt_version: str
    gpu: GpuInfo
    precision: str
    int8_source: str | None
    profiles: tuple[Profile, ...]
    dla_core: int | None
    calibration_hash: str | None
    version_compatible: bool
    hardware_compatibility: str
    flavour: str = "tensorrt"
    compute_capabilities: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Json]:
        """The identity fields as the manifest writes them (``flavour`` and targets for RTX only)."""
        out: dict[str, Json] = {
            "onnx_sha256": self.onnx_sha256, "trt_version": self.trt_version, "gpu": _gpu_dict(self.gpu),
            "precision": self.precision, "int8_source": self.int8_source,
            "profiles": [profile_to_dict(p) for p in self.profiles], "dla_core": self.dla_core,
            "calibration_hash": self.calibration_hash, "version_compatible": self.version_compatible,
            "hardware_compatibility": self.hardware_compatibility}
        if self.flavour != "tensorrt":
            out["flavour"] = self.flavour
            out["compute_capabilities"] = list(self.compute_capabilities)
        return out


@dataclass(frozen=True, kw_only=True)
class EngineManifest:
    """The ``<engine>.json`` beside a TensorRT engine, field for field (in the file's key order).

    Attributes:
        format: :data:`FORMAT`.
        endoedge_version: the endoedge that built the engine.
        created: ISO 8601 UTC build time (seconds).
        onnx_sha256: sha256 of the ONNX the engine was built from.
        onnx_path: that ONNX, resolved (``None`` when unknown).
        trt_version: the TensorRT version string of the build (``10.3.0.30``; RTX ``1.7.1.116``).
        flavour: ``tensorrt`` or ``rtx`` (TensorRT for RTX).
        compute_capabilities: TensorRT for RTX targets (``()`` = its Ampere+ default; full
            TensorRT: ``()``, the engine runs on ``gpu``).
        gpu: the building GPU (name, compute capability, SM count).
        jetpack: JetPack release of the building Jetson (``None`` off Jetson).
        l4t: L4T release of the building Jetson (``None`` off Jetson).
        precision: ``fp32`` / ``fp16`` / ``int8``.
        int8_source: ``qdq``, ``calibrator`` or ``None`` (not INT8).
        calibration_hash: content hash of the calibration data (calibrator builds only).
        profiles: optimization profiles (one per profile: input name -> :class:`ShapeRange`).
        io: every I/O tensor in the network's order.
        version_compatible: built with ``BuilderFlag.VERSION_COMPATIBLE``.
        hardware_compatibility: ``none``, ``ampere+`` or ``same-cc``.
        dla_core: the DLA core it runs on, ``None`` = GPU.
        spec: the ONNX ``metadata_props`` (the endoedge model spec as key/values).
    """

    format: str = FORMAT
    endoedge_version: str = ""
    created: str = ""
    onnx_sha256: str
    onnx_path: str | None = None
    trt_version: str
    flavour: str = "tensorrt"
    compute_capabilities: tuple[str, ...] = ()
    gpu: GpuInfo
    jetpack: str | None = None
    l4t: str | None = None
    precision: str
    int8_source: str | None = None
    calibration_hash: str | None = None
    profiles: tuple[Profile, ...]
    io: tuple[TensorIO, ...]
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    dla_core: int | None = None
    spec: Mapping[str, str] = field(default_factory=dict)

    @property
    def inputs(self) -> tuple[TensorIO, ...]:
        """The input tensors."""
        return tuple(t for t in self.io if t.mode == "input")

    @property
    def outputs(self) -> tuple[TensorIO, ...]:
        """The output tensors."""
        return tuple(t for t in self.io if t.mode == "output")

    @property
    def max_batch(self) -> int | None:
        """The largest batch (axis 0 of a profile's ``max``) any profile allows; ``None`` without profiles."""
        sizes = [r.max[0] for p in self.profiles for r in p.values() if r.max]
        return max(sizes) if sizes else None

    @property
    def identity(self) -> EngineIdentity:
        """The cache-key fields of this engine."""
        return EngineIdentity(self.onnx_sha256, self.trt_version, self.gpu, self.precision, self.int8_source,
                              self.profiles, self.dla_core, self.calibration_hash, self.version_compatible,
                              self.hardware_compatibility, self.flavour, self.compute_capabilities)

    def to_dict(self) -> dict[str, Json]:
        """The JSON object ``endoedge build`` writes (keys in this class's field order)."""
        ident = self.identity.to_dict()
        rtx: dict[str, Json] = {k: ident[k] for k in ("flavour", "compute_capabilities") if k in ident}
        return {
            "format": self.format, "endoedge_version": self.endoedge_version, "created": self.created,
            "onnx_sha256": self.onnx_sha256, "onnx_path": self.onnx_path, "trt_version": self.trt_version,
            **rtx, "gpu": ident["gpu"], "jetpack": self.jetpack, "l4t": self.l4t, "precision": self.precision,
            "int8_source": self.int8_source, "calibration_hash": self.calibration_hash,
            "profiles": ident["profiles"], "io": [t.to_dict() for t in self.io],
            "version_compatible": self.version_compatible, "hardware_compatibility": self.hardware_compatibility,
            "dla_core": self.dla_core, "spec": dict(self.spec),
        }

    @classmethod
    def from_dict(cls, data: object, *, source: str = "engine manifest", rebuild: str = DEFAULT_REBUILD,
                  partial: bool = False) -> EngineManifest:
        """Read a manifest object (``json.loads`` of the file).

        Args:
            data: the parsed JSON.
            source: what the messages call it, e.g. ``engine manifest 'polyp.engine.json'``.
            rebuild: the command the messages give to rebuild the engine.
            partial: accept a hand-written manifest: no ``format`` check and only ``io``
                required; absent fields take their defaults (empty strings, no GPU name, no
                profiles, empty spec).

        Raises:
            ModelFormatError: not a manifest, a required key missing, or a value of the wrong type.
        """
        fix = f"rebuild the engine with `{rebuild}`"
        if not isinstance(data, dict):
            raise ModelFormatError(f"{source} is not an {FORMAT} file (a JSON {type(data).__name__}); {fix}")
        if not partial:
            if data.get("format") != FORMAT:
                raise ModelFormatError(f"{source} is not an {FORMAT} file (format {data.get('format')!r}); {fix}")
            missing = [k for k in REQUIRED if k not in data]
            if missing:
                raise ModelFormatError(f"{source} lacks {', '.join(missing)}; {fix}")
        elif "io" not in data:
            raise ModelFormatError(f"{source} lacks io; {fix}")
        try:
            return cls._parse(data, partial)
        except _Bad as err:
            raise ModelFormatError(f"{source} is unreadable or incomplete ({err}); {fix}") from None

    @classmethod
    def _parse(cls, d: dict[str, object], partial: bool) -> EngineManifest:
        return cls(
            format=_text(d, "format", FORMAT), endoedge_version=_text(d, "endoedge_version", ""),
            created=_text(d, "created", ""), onnx_sha256=_text(d, "onnx_sha256", ""),
            onnx_path=_opt_text(d, "onnx_path"), trt_version=_text(d, "trt_version", ""),
            flavour=_flavour(d), compute_capabilities=tuple(
                _text({"cc": c}, "cc", "") for c in _list(d.get("compute_capabilities"), "compute_capabilities")),
            gpu=_gpu(d.get("gpu"), partial), jetpack=_opt_text(d, "jetpack"), l4t=_opt_text(d, "l4t"),
            precision=_text(d, "precision", ""), int8_source=_opt_text(d, "int8_source"),
            calibration_hash=_opt_text(d, "calibration_hash"),
            profiles=tuple(_profile(p, i) for i, p in enumerate(_list(d.get("profiles"), "profiles"))),
            io=tuple(_tensor(t, i) for i, t in enumerate(_list(d.get("io"), "io"))),
            version_compatible=bool(d.get("version_compatible")),
            hardware_compatibility=_text(d, "hardware_compatibility", "none"),
            dla_core=_opt_int(d.get("dla_core"), "dla_core"), spec=_spec(d.get("spec")),
        )


def profile_to_dict(profile: Profile) -> dict[str, Json]:
    """A profile as the manifest writes it: ``{input: {"min", "opt", "max"}}``."""
    return {name: r.to_dict() for name, r in profile.items()}


def parse_profile(raw: Mapping[str, Mapping[str, Sequence[int]]]) -> dict[str, ShapeRange]:
    """``{input: {"min": [...], "opt": [...], "max": [...]}}`` (a build plan's profile) -> typed."""
    return {name: ShapeRange(*(tuple(int(d) for d in s[k]) for k in ("min", "opt", "max"))) for name, s in raw.items()}


def _gpu_dict(gpu: GpuInfo) -> dict[str, Json]:
    return {k: v for k, v in gpu.to_dict().items()}


# -- field readers: each raises _Bad naming the field ------------------------------------------
def _text(d: Mapping[str, object], key: str, default: str) -> str:
    value = _opt_text(d, key)
    return default if value is None else value


def _opt_text(d: Mapping[str, object], key: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise _Bad(f"{key} is a JSON {type(value).__name__}, not a string")
    return str(value)


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise _Bad(f"{what} is {value!r}, not a whole number")
    return int(value)


def _opt_int(value: object, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _shape(value: object, what: str) -> tuple[int, ...]:
    return tuple(_int(v, f"{what}[{i}]") for i, v in enumerate(_list(value, what)))


def _list(value: object, what: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad(f"{what} is {type(value).__name__}, not a list")
    return value


def _obj(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _Bad(f"{what} is {type(value).__name__}, not an object")
    return value


def _gpu(value: object, partial: bool) -> GpuInfo:
    g = _obj({} if value is None and partial else value, "gpu")
    if not partial:
        missing = [k for k in ("name", "compute_capability", "sm_count") if k not in g]
        if missing:
            raise _Bad(f"gpu lacks {', '.join(missing)}")
    sms = g.get("sm_count")
    return GpuInfo(_text(g, "name", ""), _text(g, "compute_capability", ""),
                   0 if sms is None else _int(sms, "gpu.sm_count"))


def _profile(value: object, index: int) -> dict[str, ShapeRange]:
    what = f"profiles[{index}]"
    out = {}
    for name, rng in _obj({} if value is None else value, what).items():
        r = _obj(rng, f"{what}.{name}")
        if not all(k in r for k in ("min", "opt", "max")):
            raise _Bad(f"{what}.{name} lacks min, opt or max")
        out[name] = ShapeRange(*(_shape(r[k], f"{what}.{name}.{k}") for k in ("min", "opt", "max")))
    return out


def _tensor(value: object, index: int) -> TensorIO:
    t = _obj(value, f"io[{index}]")
    missing = [k for k in ("name", "mode", "dtype", "shape") if k not in t]
    if missing:
        raise _Bad(f"io[{index}] lacks {', '.join(missing)}")
    return TensorIO(_text(t, "name", ""), _text(t, "mode", ""), _text(t, "dtype", ""),
                    _shape(t["shape"], f"io[{index}].shape"))


def _flavour(d: Mapping[str, object]) -> str:
    value = _text(d, "flavour", "tensorrt")
    if value not in FLAVOURS:
        raise _Bad(f"flavour is {value!r}, not one of {', '.join(FLAVOURS)}")
    return value


def _spec(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in _obj({} if value is None else value, "spec").items()}
