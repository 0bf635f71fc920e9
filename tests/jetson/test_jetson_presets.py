"""Jetson platform detection and NVIDIA GStreamer presets, tested as strings (no Jetson here).

The ``gstreamer`` tests swap the NVIDIA elements for desktop ones (videotestsrc for the cameras,
videoconvert/videoscale/videoflip for nvvidconv, avdec/jpegdec for nvv4l2decoder) and check that the
rest of each string parses with ``Gst.parse_launch``, and for files and MJPEG that it runs and
delivers BGR frames.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from endoedge.errors import InputError
from endoedge.jetson import (
    auto_pipeline,
    csi_camera,
    elements,
    is_jetson,
    jetpack_for_l4t,
    jetpack_major_for_l4t,
    jetson_info,
    mjpeg_decoder_for,
    parse_tegra_release,
    pipeline_for_source,
    quote,
    rtsp,
    v4l2_camera,
    video_file,
)
from endoedge.jetson.presets import FLIP_TO_VIDEOFLIP, LEAKY_QUEUE

SINK = "appsink name=sink drop=true max-buffers=1 sync=false emit-signals=false"
ORIN_RELEASE = (
    "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, "
    "DATE: Fri Sep 13 04:36:44 UTC 2024\n# KERNEL_VARIANT: oot\n"
)


def _fake_root(tmp_path: Path, release: str | None = None, model: str | None = None) -> Path:
    if release is not None:
        (tmp_path / "etc").mkdir(parents=True, exist_ok=True)
        (tmp_path / "etc" / "nv_tegra_release").write_text(release)
    if model is not None:
        (tmp_path / "proc" / "device-tree").mkdir(parents=True, exist_ok=True)
        (tmp_path / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\x00")
    return tmp_path


def _names(desc: str) -> list[str]:
    return [e.split(None, 1)[0] for e in elements(desc)]


# ------------------------------------------------------------------------------------ platform


def test_orin_detected_with_jetpack(tmp_path):
    root = _fake_root(tmp_path, ORIN_RELEASE, "NVIDIA Jetson AGX Orin Developer Kit")
    assert is_jetson(root)
    info = jetson_info(root)
    assert info == {
        "model": "NVIDIA Jetson AGX Orin Developer Kit",
        "l4t_release": "R36 (release), REVISION: 4.0",
        "l4t": "36.4.0",
        "jetpack": "6.1",
        "jetpack_major": 6,
        "cuda": "12.6",
        "tensorrt": "10.3.0",
        "ubuntu": "22.04",
        "gstreamer": "1.20",
    }


def test_desktop_is_not_jetson(tmp_path):
    assert not is_jetson(tmp_path)
    assert jetson_info(tmp_path) is None
    pi = _fake_root(tmp_path, model="Raspberry Pi 4 Model B Rev 1.4")
    assert not is_jetson(pi)
    assert not is_jetson(_fake_root(tmp_path, model="Florinda SBC"))  # word-bounded "Orin"


def test_model_file_alone_is_enough(tmp_path):
    root = _fake_root(tmp_path, model="Jetson Xavier NX Developer Kit")
    info = jetson_info(root)
    assert info is not None
    assert info["model"] == "Jetson Xavier NX Developer Kit"
    assert info["l4t"] is None
    assert info["jetpack"] is None


def test_release_file_alone_is_enough(tmp_path):
    root = _fake_root(tmp_path, "# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref")
    info = jetson_info(root)
    assert info is not None
    assert info["model"] is None
    assert (info["l4t"], info["jetpack"], info["gstreamer"]) == ("35.3.1", "5.1.1", "1.16")


def test_garbage_release_file_is_not_jetson(tmp_path):
    assert not is_jetson(_fake_root(tmp_path, "hello\n"))


def test_unknown_l4t_keeps_the_jetpack_line(tmp_path):
    root = _fake_root(
        tmp_path, "# R36 (release), REVISION: 9.0, GCID: 1", "NVIDIA Jetson Orin Nano"
    )
    info = jetson_info(root)
    assert info is not None
    assert (info["l4t"], info["jetpack"], info["jetpack_major"]) == ("36.9.0", None, 6)
    assert info["tensorrt"] is None
    assert info["ubuntu"] == "22.04"


@pytest.mark.parametrize(
    ("l4t", "jetpack"),
    [
        ("32.6.1", "4.6"),
        ("32.7.1", "4.6.1"),
        ("32.7.6", "4.6.6"),
        ("35.1.0", "5.0.2"),
        ("35.2.1", "5.1"),
        ("35.4.1", "5.1.2"),
        ("35.5.0", "5.1.3"),
        ("35.6.0", "5.1.4"),
        ("35.6.2", "5.1.5"),
        ("36.3.0", "6.0"),
        ("36.4", "6.1"),
        ("36.4.3", "6.2"),
        ("36.4.7", "6.2.1"),
        ("38.2.0", "7.0"),
        ("R38.4", "7.1"),
        ("39.2", "7.2"),
        ("36.9.9", None),
        ("99.1", None),
    ],
)
def test_l4t_to_jetpack(l4t, jetpack):
    assert jetpack_for_l4t(l4t) == jetpack


def test_jetpack_line_and_bad_versions():
    assert [jetpack_major_for_l4t(v) for v in ("32.7.1", "35.1", "36.9.9", "38.2", "12.0")] == [
        4,
        5,
        6,
        7,
        None,
    ]
    with pytest.raises(InputError, match="not an L4T version"):
        jetpack_for_l4t("six")


def test_parse_tegra_release():
    assert parse_tegra_release(ORIN_RELEASE) == ("R36 (release), REVISION: 4.0", (36, 4, 0))
    assert parse_tegra_release("# R32 (release), REVISION: 7.1, GCID: 29818004") == (
        "R32 (release), REVISION: 7.1",
        (32, 7, 1),
    )
    assert parse_tegra_release("") is None


# -------------------------------------------------------------------------------------- presets


def test_csi_camera_string():
    assert csi_camera(appsink=SINK) == (
        "nvarguscamerasrc sensor-id=0 ! "
        "video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1,format=NV12 ! "
        "nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! "
        f"{LEAKY_QUEUE} ! videoconvert ! video/x-raw,format=BGR ! {SINK}"
    )
    desc = csi_camera(1, 1280, 720, 60, 2, appsink=SINK, sensor_mode=4, num_buffers=10)
    parts = elements(desc)
    assert parts[0] == "nvarguscamerasrc sensor-id=1 sensor-mode=4 num-buffers=10"
    assert parts[1] == "video/x-raw(memory:NVMM),width=1280,height=720,framerate=60/1,format=NV12"
    assert parts[2] == "nvvidconv flip-method=2"


def test_live_queue_sits_before_the_cpu_conversion():
    live = elements(csi_camera(appsink=SINK, live=True))
    assert live[-5:] == [
        "video/x-raw,format=BGRx",
        LEAKY_QUEUE,
        "videoconvert",
        "video/x-raw,format=BGR",
        SINK,
    ]
    assert "leaky=downstream max-size-buffers=1" in LEAKY_QUEUE
    offline = elements(csi_camera(appsink=SINK, live=False))
    assert not any(p.startswith("queue") for p in offline)
    assert offline[-1] == SINK


def test_output_size_scales_on_the_vic():
    desc = csi_camera(appsink=SINK, output_size=(1280, 720))
    assert "nvvidconv flip-method=0 ! video/x-raw,format=BGRx,width=1280,height=720 !" in desc


def test_v4l2_raw_goes_through_nvmm():
    desc = v4l2_camera("/dev/video2", 1920, 1080, 60, "uyvy", appsink=SINK, flip_method=6)
    assert elements(desc) == [
        'v4l2src device="/dev/video2" do-timestamp=true',
        "video/x-raw,format=UYVY,width=1920,height=1080,framerate=60/1",
        "nvvidconv",
        "video/x-raw(memory:NVMM),format=NV12",
        "nvvidconv flip-method=6",
        "video/x-raw,format=BGRx",
        LEAKY_QUEUE,
        "videoconvert",
        "video/x-raw,format=BGR",
        SINK,
    ]


def test_v4l2_mjpeg_decoders():
    hw = v4l2_camera(fmt="MJPG", appsink=SINK, mjpeg_decoder="nvv4l2decoder", num_buffers=5)
    assert _names(hw) == [
        "v4l2src",
        "image/jpeg,width=1920,height=1080,framerate=30/1",
        "jpegparse",
        "nvv4l2decoder",
        "nvvidconv",
        "video/x-raw,format=BGRx",
        "queue",
        "videoconvert",
        "video/x-raw,format=BGR",
        "appsink",
    ]
    assert "nvv4l2decoder mjpeg=1" in elements(hw)
    assert elements(hw)[0].endswith("num-buffers=5")
    cpu = v4l2_camera(
        fmt="MJPG", appsink=SINK, mjpeg_decoder="jpegdec", flip_method=3, output_size=(640, 360)
    )
    assert "nvv4l2decoder" not in cpu
    assert "nvvidconv" not in cpu
    assert _names(cpu)[2:6] == [
        "jpegdec",
        "videoflip",
        "videoscale",
        "video/x-raw,width=640,height=360",
    ]
    assert "videoflip video-direction=90r" in cpu
    # "auto" on this desktop (not a Jetson) means JetPack <= 6 behaviour: NVJPG.
    assert "nvv4l2decoder mjpeg=1" in v4l2_camera(fmt="MJPG", appsink=SINK)


def test_mjpeg_decoder_per_jetpack_line(tmp_path):
    orin = jetson_info(_fake_root(tmp_path, ORIN_RELEASE, "NVIDIA Jetson AGX Orin Developer Kit"))
    assert mjpeg_decoder_for(orin) == "nvv4l2decoder"
    assert mjpeg_decoder_for(None) == "nvv4l2decoder"
    thor = jetson_info(
        _fake_root(tmp_path / "thor", "# R38 (release), REVISION: 2.0", "NVIDIA Jetson AGX Thor")
    )
    assert thor is not None
    assert thor["jetpack"] == "7.0"
    assert mjpeg_decoder_for(thor) == "jpegdec"
    jp72_orin = jetson_info(
        _fake_root(tmp_path / "jp72", "# R39 (release), REVISION: 2.0", "NVIDIA Jetson AGX Orin")
    )
    assert mjpeg_decoder_for(jp72_orin) == "jpegdec"


@pytest.mark.parametrize(
    ("name", "codec", "chain"),
    [
        ("a.mp4", "h264", ["qtdemux", "queue", "h264parse", "nvv4l2decoder"]),
        ("a.MOV", "h265", ["qtdemux", "queue", "h265parse", "nvv4l2decoder"]),
        ("a.mkv", "h265", ["matroskademux", "queue", "h265parse", "nvv4l2decoder"]),
        ("a.webm", "av1", ["matroskademux", "queue", "nvv4l2decoder"]),
        ("a.ts", "h264", ["tsdemux", "queue", "h264parse", "nvv4l2decoder"]),
        ("a.avi", "h264", ["avidemux", "queue", "h264parse", "nvv4l2decoder"]),
        ("a.ivf", "av1", ["ivfparse", "queue", "nvv4l2decoder"]),
        ("a.h264", "h264", ["h264parse", "nvv4l2decoder"]),
        ("a.265", "h265", ["h265parse", "nvv4l2decoder"]),
    ],
)
def test_video_file_explicit_codec(name, codec, chain):
    desc = video_file(f"/videos/{name}", codec=codec, appsink=SINK)
    assert _names(desc) == [
        "filesrc",
        *chain,
        "nvvidconv",
        "video/x-raw,format=BGRx",
        "videoconvert",
        "video/x-raw,format=BGR",
        "appsink",
    ]
    assert elements(desc)[0] == f'filesrc location="/videos/{name}"'
    assert elements(desc)[-1] == SINK


def test_video_file_live_and_mismatches():
    assert LEAKY_QUEUE in video_file("/v/a.mp4", codec="h264", appsink=SINK, live=True)
    with pytest.raises(InputError, match="elementary stream"):
        video_file("/v/a.h264", codec="h265", appsink=SINK)
    with pytest.raises(InputError, match="AV1 only"):
        video_file("/v/a.ivf", codec="h264", appsink=SINK)
    with pytest.raises(InputError, match="not found"):
        video_file("/v/missing.mp4", appsink=SINK)  # auto needs to read the file
    with pytest.raises(InputError, match="codec must be"):
        video_file("/v/a.mp4", codec="vp9", appsink=SINK)  # type: ignore[arg-type]


# Minimal container headers, enough for the probe (no media data).
def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _mp4(fourcc: bytes, handler: bytes = b"vide") -> bytes:
    hdlr = _box(b"hdlr", b"\0" * 8 + handler + b"\0" * 12)
    stsd = _box(b"stsd", b"\0" * 4 + struct.pack(">I", 1) + _box(fourcc, b"\0" * 78))
    minf = _box(b"minf", _box(b"stbl", stsd))
    trak = _box(b"trak", _box(b"mdia", hdlr + minf))
    sound = _box(b"trak", _box(b"mdia", _box(b"hdlr", b"\0" * 8 + b"soun" + b"\0" * 12)))
    # mdat before moov (not "fast start"), with a 64-bit size, to exercise the top-level walk.
    mdat = struct.pack(">I4sQ", 1, b"mdat", 16 + 1000) + b"\0" * 1000
    return _box(b"ftyp", b"isom\0\0\0\0") + mdat + _box(b"moov", sound + trak)


def _ts(stream_type: int) -> bytes:
    def packet(pid: int, section: bytes) -> bytes:
        head = struct.pack(">BHB", 0x47, 0x4000 | pid, 0x10) + b"\0"  # PUSI, payload, pointer 0
        return (head + section).ljust(188, b"\xff")

    pat = bytes([0x00, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1, 0xE1, 0x00]) + b"\0" * 4  # PMT pid 0x100
    es = bytes([0x0F, 0xE1, 0x02, 0xF0, 0x00, stream_type, 0xE1, 0x01, 0xF0, 0x00])
    pmt = bytes([0x02, 0xB0, 13 + len(es), 0, 1, 0xC1, 0, 0, 0xE1, 0x01, 0xF0, 0x00]) + es
    return packet(0, pat) + packet(0x100, pmt + b"\0" * 4)


@pytest.mark.parametrize(
    ("name", "data", "chain"),
    [
        ("a.mp4", _mp4(b"hvc1"), ["qtdemux", "queue", "h265parse"]),
        ("no_extension", _mp4(b"avc1"), ["qtdemux", "queue", "h264parse"]),
        ("a.mov", _mp4(b"av01"), ["qtdemux", "queue"]),
        (
            "a.mkv",
            b"\x1a\x45\xdf\xa3" + b"\0" * 40 + b"\x86\x8fV_MPEGH/ISO/HEVC",
            ["matroskademux", "queue", "h265parse"],
        ),
        ("a.ts", _ts(0x1B), ["tsdemux", "queue", "h264parse"]),
        ("a.m2ts", _ts(0x24), ["tsdemux", "queue", "h265parse"]),
        ("a.ivf", b"DKIF\0\0\x20\0AV01" + b"\0" * 20, ["ivfparse", "queue"]),
    ],
)
def test_video_file_auto_reads_the_codec(tmp_path, name, data, chain):
    path = tmp_path / name
    path.write_bytes(data)
    names = _names(video_file(path, appsink=SINK))
    assert names[: len(chain) + 2] == ["filesrc", *chain, "nvv4l2decoder"]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("a.mp4", _mp4(b"vp09")),  # a codec NVDEC may decode but the explicit chain does not know
        ("a.mp4", _mp4(b"avc1", handler=b"soun")),  # no video track found
        ("a.avi", b"RIFF\0\0\0\0AVI LIST"),
        ("a.ivf", b"DKIF\0\0\x20\0VP90" + b"\0" * 20),
        ("a.bin", b"not a video at all"),
    ],
)
def test_video_file_auto_falls_back_to_decodebin(tmp_path, name, data, caplog):
    path = tmp_path / name
    path.write_bytes(data)
    desc = video_file(path, appsink=SINK)
    assert _names(desc)[:3] == ["filesrc", "decodebin", "nvvidconv"]
    assert "decodebin" in caplog.text


def test_rtsp_string():
    desc = rtsp("rtsp://user:pw@10.0.0.5:8554/live?ch=1&x=2", 50, appsink=SINK)
    assert elements(desc) == [
        'rtspsrc location="rtsp://user:pw@10.0.0.5:8554/live?ch=1&x=2" latency=50 '
        "drop-on-latency=true",
        "rtph264depay",
        "h264parse",
        "nvv4l2decoder",
        "nvvidconv",
        "video/x-raw,format=BGRx",
        LEAKY_QUEUE,
        "videoconvert",
        "video/x-raw,format=BGR",
        SINK,
    ]
    h265 = rtsp("rtsps://cam/s", codec="h265", appsink=SINK, tcp=True, live=False)
    assert "protocols=tcp ! rtph265depay ! h265parse ! nvv4l2decoder" in h265
    assert "queue" not in h265
    assert "latency=0 " in rtsp("rtsp://cam/s", 0, appsink=SINK)


@pytest.mark.parametrize(
    "path",
    [
        "/data/my clips/case 12.mp4",
        "/data/it's/a!b,c=d;(x).mp4",
        "/données/ünï cødé.mkv",
        "/a  b/c.ts",
    ],
)
def test_paths_are_quoted(path):
    desc = video_file(path, codec="h264", appsink=SINK)
    assert elements(desc)[0] == f'filesrc location="{path}"'
    assert elements(desc)[-1] == SINK


@pytest.mark.parametrize("path", ['/a"b.mp4', "/a\\b.mp4", "/a\nb.mp4", "/a\tb.mp4", ""])
def test_unencodable_paths_are_refused(path):
    with pytest.raises(InputError) as exc:
        video_file(path, codec="h264", appsink=SINK)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: csi_camera(width=0, appsink=SINK), "width must be a positive integer"),
        (lambda: csi_camera(height=-1, appsink=SINK), "height must be a positive integer"),
        (lambda: csi_camera(width=True, appsink=SINK), "width must be"),
        (lambda: csi_camera(width=1920.0, appsink=SINK), "width must be"),
        (lambda: csi_camera(width="1920", appsink=SINK), "width must be"),
        (lambda: csi_camera(width=20000, appsink=SINK), "at most 16384"),
        (lambda: csi_camera(fps=0, appsink=SINK), "fps must be a positive number"),
        (lambda: csi_camera(fps=-30, appsink=SINK), "fps must be a positive number"),
        (lambda: csi_camera(fps="30", appsink=SINK), "fps must be a positive number"),
        (lambda: csi_camera(fps=5000, appsink=SINK), "fps must be at most"),
        (lambda: csi_camera(flip_method=8, appsink=SINK), "flip_method must be at most 7"),
        (lambda: csi_camera(flip_method=-1, appsink=SINK), "flip_method must be an integer >= 0"),
        (lambda: csi_camera(sensor_id=-1, appsink=SINK), "sensor_id must be"),
        (lambda: csi_camera(appsink=SINK, num_buffers=0), "num_buffers must be"),
        (lambda: csi_camera(appsink=SINK, output_size=(0, 10)), "output width"),
        (lambda: csi_camera(appsink=SINK, output_size=(10,)), "output_size must be"),
        (lambda: csi_camera(appsink=""), "appsink must be one sink element"),
        (lambda: csi_camera(appsink="appsink ! fakesink"), "appsink must be one sink element"),
        (lambda: csi_camera(appsink="! appsink"), "appsink must be one sink element"),
        (lambda: v4l2_camera(fmt="RGB", appsink=SINK), "fmt 'RGB' is not supported"),
        (lambda: v4l2_camera(device='/dev/"x', appsink=SINK), "device"),
        (lambda: v4l2_camera(fmt="MJPG", appsink=SINK, mjpeg_decoder="x"), "mjpeg_decoder"),
        (lambda: rtsp("http://cam/s", appsink=SINK), "must start with rtsp://"),
        (lambda: rtsp('rtsp://cam/"s', appsink=SINK), "percent-encode"),
        (lambda: rtsp("rtsp://cam/s", -1, appsink=SINK), "latency_ms must be an integer >= 0"),
        (lambda: rtsp("rtsp://cam/s", codec="av1", appsink=SINK), "codec must be one of"),
        (lambda: pipeline_for_source("csi://x", appsink=SINK), "csi://N"),
    ],
)
def test_bad_values_are_one_line_input_errors(call, match):
    with pytest.raises(InputError, match=match) as exc:
        call()
    assert "\n" not in str(exc.value)


def test_framerates():
    assert "framerate=2997/100," in csi_camera(fps=29.97, appsink=SINK)
    assert "framerate=30000/1001," in csi_camera(fps=Fraction(30000, 1001), appsink=SINK)
    assert "framerate=15/2," in csi_camera(fps=7.5, appsink=SINK)


def test_quote():
    assert quote("/dev/video0") == '"/dev/video0"'
    with pytest.raises(InputError, match="device"):
        quote("a\\b", "device")


def test_elements_split_respects_quotes():
    assert elements('filesrc location="/a ! b.mp4" ! fakesink') == [
        'filesrc location="/a ! b.mp4"',
        "fakesink",
    ]


def test_source_selection(tmp_path):
    assert _names(pipeline_for_source("csi://1", appsink=SINK))[0] == "nvarguscamerasrc"
    assert "sensor-id=1" in pipeline_for_source("csi://1", appsink=SINK)  # type: ignore[operator]
    v4l2 = pipeline_for_source("/dev/video3", appsink=SINK, width=640, height=480, fmt="MJPG")
    assert v4l2 is not None
    assert "image/jpeg,width=640,height=480,framerate=30/1" in v4l2
    assert LEAKY_QUEUE in v4l2
    assert _names(pipeline_for_source("rtsp://cam/s", appsink=SINK))[0] == "rtspsrc"  # type: ignore[arg-type]
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(_mp4(b"avc1"))
    offline = pipeline_for_source(str(clip), appsink=SINK)
    assert offline is not None
    assert "h264parse ! nvv4l2decoder" in offline
    assert "queue leaky" not in offline
    assert "queue leaky" in pipeline_for_source(str(clip), appsink=SINK, live=True)  # type: ignore[operator]
    for other in (
        "test",
        str(tmp_path),
        str(tmp_path / "*.png"),
        "videotestsrc ! appsink name=sink",
    ):
        assert pipeline_for_source(other, appsink=SINK) is None
    with pytest.raises(InputError, match="width must be"):
        pipeline_for_source("/dev/video0", appsink=SINK, width=0)


def test_auto_pipeline_only_on_jetson(tmp_path):
    assert auto_pipeline("csi://0", appsink=SINK, root=tmp_path / "desktop") is None
    root = _fake_root(tmp_path / "orin", ORIN_RELEASE, "NVIDIA Jetson Orin NX")
    desc = auto_pipeline("/dev/video0", appsink=SINK, root=root, fmt="NV12")
    assert desc is not None
    assert desc.startswith('v4l2src device="/dev/video0"')


def test_jetson_cli(capsys):
    from endoedge.cli import main as cli_main

    def main(argv):
        return cli_main(["jetson", *argv])

    assert (
        main(["pipeline", "csi://0", "--sink", "fakesink sync=false", "--num-buffers", "30"]) == 0
    )
    out = capsys.readouterr().out.strip()
    assert out.startswith("nvarguscamerasrc sensor-id=0 num-buffers=30 ! ")
    assert out.endswith("! fakesink sync=false")
    assert main(["pipeline", "rtsp://cam/s", "--codec", "h265", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "rtph265depay ! h265parse" in out
    assert "queue" not in out
    assert main(["pipeline", "test"]) == 1
    err = capsys.readouterr().err
    assert "no Jetson preset" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["pipeline", "/dev/video0", "--width", "0"]) == 1
    assert main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["jetson"] in (True, False)


def test_jetson_cli_masks_credentials_unless_asked(capsys):
    from endoedge.cli import main as cli_main

    url = "rtsp://admin:S3cret@cam/s?token=T0k"
    assert cli_main(["jetson", "pipeline", url]) == 0
    out = capsys.readouterr().out
    assert 'location="rtsp://***@cam/s?token=***"' in out
    assert "S3cret" not in out
    assert "T0k" not in out
    assert cli_main(["jetson", "pipeline", url, "--show-credentials"]) == 0  # piped to gst-launch
    assert f'location="{url}"' in capsys.readouterr().out
    assert cli_main(["jetson", "pipeline", "rtsp://u:S3cret@cam/\"s"]) == 1
    err = capsys.readouterr().err
    assert "percent-encode" in err
    assert "S3cret" not in err


# ----------------------------------------------------- desktop stand-ins, parsed with GStreamer

DESKTOP_DECODERS = {"h264": "avdec_h264", "h265": "avdec_h265", "av1": "av1dec"}


def _desktop(desc: str, codec: str = "h264") -> str:
    """Replace the NVIDIA elements of a preset with desktop elements doing the same job."""
    out: list[str] = []
    for part in elements(desc):
        name, _, props = part.partition(" ")
        buffers = re.search(r"num-buffers=(\d+)", props)
        count = buffers.group(1) if buffers else "3"
        if name in ("nvarguscamerasrc", "v4l2src"):
            out.append(f"videotestsrc is-live=true num-buffers={count}")
        elif name.startswith("image/jpeg") and out[-1].startswith("videotestsrc"):
            out += ["jpegenc", part]
        elif name == "nvvidconv":
            flip = re.search(r"flip-method=(\d)", props)
            direction = FLIP_TO_VIDEOFLIP[int(flip.group(1))] if flip else "identity"
            out.append(f"videoconvert ! videoscale ! videoflip video-direction={direction}")
        elif name == "nvv4l2decoder":
            out.append("jpegdec" if "mjpeg=1" in props else DESKTOP_DECODERS[codec])
        else:
            out.append(part.replace("(memory:NVMM)", ""))
    return " ! ".join(out)


@pytest.fixture(scope="module")
def gst():
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    Gst.init(None)
    return Gst


def _run(gst, desc: str, timeout_s: float = 20.0) -> list[tuple[int, int, int]]:
    """Play ``desc`` to EOS; (height, width, channels) of each BGR frame the appsink got."""
    pipeline = gst.parse_launch(desc)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(gst.State.PLAYING)
    shapes = []
    try:
        while True:
            sample = sink.emit("try-pull-sample", int(timeout_s * gst.SECOND))
            if sample is None:
                break
            s = sample.get_caps().get_structure(0)
            assert s.get_value("format") == "BGR"
            shapes.append((s.get_value("height"), s.get_value("width"), 3))
        msg = pipeline.get_bus().timed_pop_filtered(gst.SECOND, gst.MessageType.ERROR)
        assert msg is None, msg.parse_error() if msg else None
        assert sink.get_property("eos"), "the pipeline stopped before EOS"
    finally:
        pipeline.set_state(gst.State.NULL)
    return shapes


def _all_presets(tmp_path: Path) -> list[tuple[str, str]]:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(_mp4(b"avc1"))
    return [
        ("h264", csi_camera(appsink=SINK, flip_method=1, output_size=(640, 360))),
        ("h264", v4l2_camera(appsink=SINK)),
        ("h264", v4l2_camera(fmt="MJPG", appsink=SINK, mjpeg_decoder="nvv4l2decoder")),
        ("h264", v4l2_camera(fmt="MJPG", appsink=SINK, mjpeg_decoder="jpegdec", flip_method=5)),
        ("h264", video_file(clip, appsink=SINK)),
        ("h265", video_file("/v/a.mkv", codec="h265", appsink=SINK, live=True)),
        ("av1", video_file("/v/a.webm", codec="av1", appsink=SINK)),
        ("av1", video_file("/v/a.ivf", codec="av1", appsink=SINK)),
        ("h264", video_file("/v/a.ts", codec="h264", appsink=SINK)),
        ("h264", video_file("/v/a.avi", codec="h264", appsink=SINK)),
        ("h264", video_file("/v/a.h264", codec="h264", appsink=SINK)),
        ("h264", rtsp("rtsp://127.0.0.1:1/x", appsink=SINK)),
        ("h265", rtsp("rtsp://127.0.0.1:1/x", codec="h265", appsink=SINK, tcp=True)),
    ]


@pytest.mark.gstreamer
def test_desktop_equivalents_parse(gst, tmp_path):
    for codec, desc in _all_presets(tmp_path):
        for part in elements(desc):  # every caps filter, NVMM ones included, is valid caps
            if "/" in part.split(None, 1)[0] and "location=" not in part:
                caps = gst.Caps.from_string(part)
                assert caps is not None, part
                if "(memory:NVMM)" in part:
                    assert caps.get_features(0).contains("memory:NVMM")
        pipeline = gst.parse_launch(_desktop(desc, codec))
        sink = pipeline.get_by_name("sink")
        assert sink.get_factory().get_name() == "appsink"
        assert sink.get_property("drop")
        assert sink.get_property("max-buffers") == 1
        queues = [e for e in pipeline.children if e.get_factory().get_name() == "queue"]
        for q in queues:
            if q.get_property("max-size-buffers") == 1:
                assert int(q.get_property("leaky")) == 2  # downstream


@pytest.mark.gstreamer
def test_camera_tails_deliver_bgr(gst):
    sink = "appsink name=sink sync=false"
    csi = csi_camera(width=64, height=48, flip_method=3, appsink=sink, num_buffers=3)
    assert _run(gst, _desktop(csi)) == [(64, 48, 3)] * 3  # rotated 90 degrees
    raw = v4l2_camera(width=64, height=48, appsink=sink, num_buffers=2, output_size=(32, 24))
    assert _run(gst, _desktop(raw)) == [(24, 32, 3)] * 2
    # The MJPEG CPU path has no NVIDIA element at all: only the camera is replaced.
    mjpeg = v4l2_camera(
        width=64, height=48, fmt="MJPG", appsink=sink, mjpeg_decoder="jpegdec", num_buffers=2
    )
    assert _run(gst, _desktop(mjpeg)) == [(48, 64, 3)] * 2


def _encode(gst, path: Path, encoder: str, parser: str, muxer: str, frames: int = 4) -> None:
    desc = (
        f"videotestsrc num-buffers={frames} ! video/x-raw,width=64,height=48,framerate=10/1 ! "
        f"videoconvert ! {encoder} ! {parser} ! {muxer} ! filesink location={quote(str(path))}"
    )
    pipeline = gst.parse_launch(desc)
    pipeline.set_state(gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(
        30 * gst.SECOND, gst.MessageType.EOS | gst.MessageType.ERROR
    )
    pipeline.set_state(gst.State.NULL)
    assert msg is not None
    assert msg.type == gst.MessageType.EOS, msg.parse_error()


@pytest.mark.gstreamer
@pytest.mark.parametrize(
    ("name", "encoder", "parser", "muxer", "codec", "chain"),
    [
        (
            "it's a clip.mp4",
            "openh264enc",
            "h264parse",
            "mp4mux",
            "h264",
            "qtdemux ! queue ! h264parse",
        ),
        (
            "clip.mkv",
            "x265enc",
            "h265parse",
            "matroskamux",
            "h265",
            "matroskademux ! queue ! h265parse",
        ),
        ("clip.ts", "openh264enc", "h264parse", "mpegtsmux", "h264", "tsdemux ! queue ! h264parse"),
        ("clip.avi", "openh264enc", "h264parse", "avimux", "h264", "decodebin"),
    ],
)
def test_video_files_decode_to_bgr(gst, tmp_path, name, encoder, parser, muxer, codec, chain):
    """Real files from GStreamer's own muxers: the probe reads the codec and the chain plays."""
    for element in (encoder, DESKTOP_DECODERS[codec]):
        if gst.ElementFactory.find(element) is None:
            pytest.skip(f"GStreamer element {element} is not installed")
    path = tmp_path / "with space" / name
    path.parent.mkdir()
    _encode(gst, path, encoder, parser, muxer)
    desc = video_file(path, appsink="appsink name=sink sync=false")
    assert f"! {chain} ! " in desc
    assert _run(gst, _desktop(desc, codec)) == [(48, 64, 3)] * 4


def test_import_reads_nothing_and_needs_no_gstreamer():
    code = (
        "import sys, endoedge.jetson, endoedge.cli.jetson\n"
        "print(sorted(m for m in ('gi', 'torch', 'cv2') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
