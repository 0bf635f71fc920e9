"""Credential redaction: URIs (user-info, credential query items), gst-launch properties, logs."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import pytest

from endoedge.spec.redact import MASK, RedactingFilter, redact

URLS = [
    "rtsp://admin:s3cret@192.168.1.20:554/Streaming/Channels/101",
    "rtsps://admin:p@ss:w0rd@cam.local/live?token=abc123&channel=2",
    "http://host:8080/video.mjpg?user=bob&password=hunter2&fps=30",
    "https://tok3n@example.com/stream.m3u8?X-Amz-Signature=deadbeef&X-Amz-Date=20260101",
    "rtsp://cam.local/s?access_token=t0k&api_key=k3y&session=s1d",
]


@pytest.mark.parametrize("url", URLS)
def test_urls_keep_host_path_and_plain_query_but_no_credential(url):
    # Oracle: urllib's own parse of the original and the redacted URL.
    before, after = urlsplit(url), urlsplit(redact(url))
    assert (after.scheme, after.hostname, after.port, after.path) == (
        before.scheme, before.hostname, before.port, before.path)
    if before.username is not None:
        assert after.username == MASK
        assert after.password is None
    for key, values in parse_qs(before.query).items():
        got = parse_qs(after.query)[key]
        secret = any(w in key.lower() for w in ("password", "token", "key", "signature", "session"))
        assert got == ([MASK] * len(values) if secret else values), key
    for secret in ("s3cret", "p@ss", "w0rd", "abc123", "hunter2", "tok3n", "deadbeef", "t0k", "k3y", "s1d"):
        assert secret not in redact(url)


def test_free_text_and_gst_strings():
    line = ("error: stream 'rtsp://u:pw1@h/x' refused; pipeline was: rtspsrc location=\"rtsp://u:pw2@h/x\" "
            "user-id=u user-pw=pw3 proxy-pw=\"p w4\" ! x264enc key-int-max=30 ! appsink name=sink")
    out = redact(line)
    for secret in ("pw1", "pw2", "pw3", "p w4"):
        assert secret not in out
    for kept in ("key-int-max=30", "user-id=u", "appsink name=sink"):
        assert kept in out
    assert redact(out) == out  # idempotent


@pytest.mark.parametrize("text", [
    "/data/videos/case@2024/clip.mp4", "udp://@:5000", "x264enc key-int-max=30 tune=zerolatency",
    "monkey=1 passthrough=true keyframe=2", "plain words, no URI", "mailto-like user@example.com",
])
def test_non_credentials_untouched(text):
    assert redact(text) == text


def test_a_quote_in_the_password_is_still_masked():
    assert "pa" not in redact(repr('rtsp://u:pa"ss@h/x')).split("@")[0]


def test_logging_filter_masks_arguments_and_exceptions():
    log = logging.getLogger("endoedge.test_redact")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    keep.addFilter(RedactingFilter())
    log.addHandler(keep)
    try:
        log.warning("opening %s (%d)", "rtsp://a:zz9@h/x?token=qq8", 3)
        try:
            raise ValueError("bad url http://a:yy7@h")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(keep)
    text = "\n".join(logging.Formatter().format(r) for r in records)
    assert "rtsp://***@h/x?token=***" in text
    assert "ValueError" in text
    for secret in ("zz9", "qq8", "yy7"):
        assert secret not in text

