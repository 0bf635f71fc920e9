"""Jetson options shared by ``endoedge bench`` and ``endoedge run``: tegrastats and the clocks protocol.

``--tegrastats auto`` (default) records tegrastats when the executable is on the PATH (a Jetson);
``--nvpmodel MODE`` and ``--lock-clocks`` run :class:`~endoedge.jetson.power.BenchProtocol`
around the work. Both end up in the report under ``jetson``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from endoedge.cli._common import int_at_least


def add_jetson_options(parser: argparse.ArgumentParser) -> None:
    """--tegrastats, --tegrastats-interval, --nvpmodel, --lock-clocks."""
    g = parser.add_argument_group("Jetson (recorded in the report under 'jetson')")
    g.add_argument("--tegrastats", choices=("auto", "on", "off"), default="auto",
                   help="record tegrastats (CPU/GPU/EMC load, temperatures, power rails) during the work "
                   "(auto: when tegrastats is on the PATH)")
    g.add_argument("--tegrastats-interval", type=int_at_least(10), default=500, metavar="MS",
                   help="tegrastats sampling interval in ms (default 500)")
    g.add_argument("--nvpmodel", type=int, metavar="MODE", help="set this nvpmodel power mode first (restored after)")
    g.add_argument("--lock-clocks", action="store_true",
                   help="jetson_clocks --store, lock clocks at the mode's maximum, --restore at the end (needs root)")


@contextmanager
def jetson_monitoring(args: argparse.Namespace, *, warmup: int) -> Iterator[dict[str, Any]]:
    """Run the protocol and the tegrastats recorder around the body; the yielded dict is filled on exit
    with ``protocol`` and ``tegrastats`` (left empty when neither applies)."""
    from endoedge.jetson import tegrastats

    block: dict[str, Any] = {}
    # Defaults for callers that build their own Namespace (``endoedge demo`` calls ``run``).
    mode, interval = getattr(args, "tegrastats", "auto"), getattr(args, "tegrastats_interval", 500)
    nvpmodel, lock = getattr(args, "nvpmodel", None), getattr(args, "lock_clocks", False)
    want = mode == "on" or (mode == "auto" and tegrastats.available())
    protocol = None
    recorder = None
    with ExitStack() as stack:
        if nvpmodel is not None or lock:
            from endoedge.jetson.power import BenchProtocol

            protocol = stack.enter_context(BenchProtocol(mode=nvpmodel, lock_clocks=lock,
                                                         warmup=warmup))
        if want:
            recorder = stack.enter_context(tegrastats.TegrastatsRecorder(interval))
        try:
            yield block
        finally:
            stack.close()
            if protocol is not None:
                block["protocol"] = protocol.record()
            if recorder is not None:
                block["tegrastats"] = recorder.summary()
