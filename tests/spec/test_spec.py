"""ModelSpec: comparable and hashable (numpy priors included), metadata schema version checked on load."""

from __future__ import annotations

import pytest

from endoedge.errors import ModelFormatError
from endoedge.postprocess import DECODERS, make_decoder
from endoedge.spec import SCHEMA_VERSION, ModelSpec


def test_ssd_specs_compare_and_hash(ssdlite, ssd300):
    spec = ssdlite[0].spec
    again = ModelSpec.from_metadata(spec.to_metadata())
    assert spec == again  # priors are numpy arrays: a plain dataclass == would raise ValueError
    assert hash(spec) == hash(again)
    assert len({spec, again, ssd300[0].spec}) == 2
    assert spec != spec.with_thresholds(score_threshold=0.9)


def test_metadata_carries_the_schema_version(ssdlite):
    meta = ssdlite[0].spec.to_metadata()
    assert meta["endoedge.schema"] == str(SCHEMA_VERSION)
    del meta["endoedge.schema"]  # files written before the key existed read as version 1
    assert ModelSpec.from_metadata(meta) == ssdlite[0].spec


def test_a_newer_schema_is_refused_naming_both_versions(ssdlite):
    meta = ssdlite[0].spec.to_metadata()
    meta["endoedge.schema"] = str(SCHEMA_VERSION + 1)
    with pytest.raises(ModelFormatError, match=rf"schema {SCHEMA_VERSION + 1} .* reads up to schema {SCHEMA_VERSION}") as info:
        ModelSpec.from_metadata(meta, where="future.onnx")
    assert "\n" not in str(info.value)


def test_unknown_decoder_lists_the_registered_ones(ssdlite):
    meta = ssdlite[0].spec.to_metadata()
    meta["endoedge.decoder"] = "detr"
    spec = ModelSpec.from_metadata(meta)
    with pytest.raises(ModelFormatError, match="unknown decoder 'detr'; known: " + ", ".join(sorted(DECODERS))):
        make_decoder(spec, ("a", "b"))
