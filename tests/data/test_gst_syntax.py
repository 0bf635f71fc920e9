"""One gst-launch quoting rule for desktop sources, the video writer and the Jetson presets."""

from __future__ import annotations

import pytest

from endoedge.data.gst_syntax import quote
from endoedge.errors import InputError


def test_quote_keeps_spaces_and_punctuation():
    assert quote("/videos/case 1, take!=2's.mp4") == '"/videos/case 1, take!=2\'s.mp4"'
    assert quote("rtsp://cam/ström") == '"rtsp://cam/ström"'


@pytest.mark.parametrize("value", ['a"b', "a\\b", "a\nb", "a\rb", "a\0b", "a\tb", "a\x7fb", ""])
def test_quote_refuses_what_gst_launch_cannot_carry(value):
    with pytest.raises(InputError) as info:
        quote(value, "device", "rename it")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("device ")


def test_every_gst_string_builder_uses_it():
    import endoedge.jetson
    import endoedge.jetson.presets
    import endoedge.pipeline.sources
    import endoedge.pipeline.writer

    for module in (endoedge.jetson, endoedge.jetson.presets, endoedge.pipeline.sources, endoedge.pipeline.writer):
        assert module.quote is quote


def test_desktop_source_refuses_a_quote_in_a_file_name(tmp_path):
    from endoedge.pipeline.sources import build_pipeline, parse_source

    bad = tmp_path / 'a"b.mp4'
    bad.write_bytes(b"x")
    with pytest.raises(InputError, match=r"video file .* contains '\"'"):
        build_pipeline(parse_source(str(bad)), live=False)
