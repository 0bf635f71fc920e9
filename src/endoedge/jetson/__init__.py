"""Jetson support: platform detection (L4T/JetPack) and NVIDIA GStreamer pipeline presets.

Importing this package reads no files and imports no GStreamer; :func:`auto_pipeline` is what
``endoedge run`` calls to use the NVIDIA elements when it runs on a Jetson. The top-level
``jetson/`` folder holds the device-side README and ``check_pipelines.sh``.
"""

from endoedge.jetson.platform import (
    JetsonInfo,
    is_jetson,
    jetpack_for_l4t,
    jetpack_major_for_l4t,
    jetson_info,
    parse_tegra_release,
)
from endoedge.jetson.presets import (
    auto_pipeline,
    csi_camera,
    elements,
    mjpeg_decoder_for,
    pipeline_for_source,
    quote,
    rtsp,
    v4l2_camera,
    video_file,
)

__all__ = [
    "JetsonInfo",
    "auto_pipeline",
    "csi_camera",
    "elements",
    "is_jetson",
    "jetpack_for_l4t",
    "jetpack_major_for_l4t",
    "jetson_info",
    "mjpeg_decoder_for",
    "parse_tegra_release",
    "pipeline_for_source",
    "quote",
    "rtsp",
    "v4l2_camera",
    "video_file",
]
