"""Credential redaction: the one function every printed, logged or written text goes through.

A camera URL such as ``rtsp://admin:s3cret@cam/stream?token=abc`` must reach GStreamer as it is,
but never a log line, the banner, an error message, report.json, a JSONL record, a plot title or a
manifest. :func:`redact` replaces, anywhere in a free text (a URL, a gst-launch string, a sentence
quoting either):

- the user-info of a URI (``scheme://user:pass@host``, ``scheme://token@host``) with ``***``:
  ``rtsp://***@cam/stream``;
- the value of a query or ``key=value`` item whose key names a credential (``password``, ``pass``,
  ``pwd``, ``token``, ``key``, ``secret``, ``auth``, ``signature``/``sig``, ``credential``, and
  GStreamer's ``user-pw``/``proxy-pw`` properties) with ``***``: ``?token=***&fps=30``.

Plain paths, ``key-int-max=30`` and other non-credential items are left alone. :class:`RedactingFilter`
applies :func:`redact` to every log record a handler emits (the CLI installs it on its handlers).
"""

from __future__ import annotations

import logging
import re

#: What replaces a secret.
MASK = "***"

# scheme://USERINFO@ : the user-info runs up to the last '@' before the host's '/', '?', '#' or a
# blank (a password with an unescaped '@' or a quote is still covered).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/?#\s<>@]*(?:@[^/?#\s<>@]*)*)@")
# KEY=VALUE where KEY ends in a credential word; VALUE is quoted, or runs to '&', ';', '#', a blank,
# a quote, '!' or ',' (query strings, gst-launch properties, caps-like lists).
_CREDENTIAL_KEYS = (
    r"pass(?:word|wd|phrase)?|pwd|pw|token|secret|key|apikey|auth(?:orization)?|signature|sig"
    r"|credentials?|session(?:id)?"
)
_KEY_VALUE = re.compile(
    rf"(?i)(?<![\w\-.])((?:[\w\-.]*[_\-.])?(?:{_CREDENTIAL_KEYS})\s*=\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^&;#\s\"'!,]+)"
)


def redact(text: object) -> str:
    """``str(text)`` with URI credentials and credential-named ``key=value`` items masked (``***``).

    Idempotent: ``redact(redact(s)) == redact(s)``.
    """
    s = str(text)
    if "=" not in s and "@" not in s:
        return s
    s = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@" if m.group(2) else m.group(0), s)
    return _KEY_VALUE.sub(lambda m: f"{m.group(1)}{MASK}", s)


class RedactingFilter(logging.Filter):
    """A logging filter that formats each record's message and redacts it (arguments included),
    and redacts the text of an attached exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: leave it to the handler to report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
