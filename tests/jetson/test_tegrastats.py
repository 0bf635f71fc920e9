"""tegrastats parsing on recorded lines of six boards, and the recorder with a FAKE tegrastats.

Lines marked "reference" are verbatim from the project's reference notes (section 6.1; those were
found in third-party repositories). Where the reference elides the start of a line ("..."), the RAM
and CPU fields were filled in with the board's core count and are marked "filled". The JetPack 7
AGX Orin line is a third-party capture (jetson-stats' test data); the Thor line is ASSEMBLED from
the Thor fields third-party parsers document (GR3D_FREQ without load, VDD_GPU / VDD_CPU_SOC_MSS /
VIN rails as cur/avg/max, NVENC0-style engines): no Thor capture was available.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from endoedge.jetson.tegrastats import TegrastatsRecorder, parse_line, summarize_samples

NANO_JP4 = ("RAM 1766/3964MB (lfb 197x4MB) SWAP 0/2048MB (cached 0MB) CPU [24%@1224,15%@1224,13%@1224,10%@1224] "
            "EMC_FREQ 0% GR3D_FREQ 0% PLL@21C CPU@25C PMIC@100C GPU@23.5C AO@33.5C thermal@24.5C "
            "POM_5V_IN 2545/2547 POM_5V_GPU 0/0 POM_5V_CPU 549/529")  # reference
XAVIER_NX_JP5 = ("11-02-2023 10:11:12 RAM 2390/6854MB (lfb 9x4MB) SWAP 0/3427MB (cached 0MB) "  # filled
                 "CPU [2%@1190,1%@1190,off,off,3%@1190,0%@1190] EMC_FREQ 0%@1600 "  # filled
                 "GR3D_FREQ 0%@[114] VIC_FREQ 115 APE 150 AUX@45C CPU@46.5C thermal@45.6C AO@45C GPU@45.5C "
                 "PMIC@50C VDD_IN 2763mW/2846mW VDD_CPU_GPU_CV 650mW/670mW VDD_SOC 650mW/711mW")  # reference
ORIN_NANO_JP6 = ("10-08-2026 04:38:21 RAM 1343/7620MB (lfb 157x4MB) SWAP 165/3810MB (cached 3MB) "
                 "CPU [0%@1497,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 15%@204 GR3D_FREQ 0%@[305] "
                 "NVDEC off NVJPG off VIC off OFA off APE 200 cpu@48.562C soc2@46.593C soc0@48.625C gpu@49.625C "
                 "tj@49.312C soc1@47.937C VDD_IN 5251mW/8535mW VDD_CPU_GPU_CV 512mW/1944mW VDD_SOC 2720mW/3659mW")
AGX_ORIN_JP6 = ("10-08-2026 04:40:02 RAM 9800/62841MB (lfb 4x4MB) SWAP 0/31420MB (cached 0MB) "  # filled
                "CPU [14%@2188,9%@2188,11%@2188,7%@2188,20%@2188,3%@2188,5%@2188,8%@2188,off,off,off,off] "
                "EMC_FREQ 3%@2133 GR3D_FREQ 0%@[0,0] NVENC 79%@166 NVDEC off NVJPG off NVJPG1 off VIC 36%@115 "
                "OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@52.562C soc2@48.437C soc0@49.093C "
                "tj@52.562C soc1@49.656C VDD_GPU_SOC 2412mW/2412mW VDD_CPU_CV 1607mW/1607mW "
                "VIN_SYS_5V0 4707mW/4707mW")
AGX_ORIN_JP7 = ("07-25-2026 09:08:28 RAM 20642/62817MB (lfb 1x2MB) "
                "CPU [23%@2201,10%@2201,4%@2201,14%@2201,30%@2201,18%@2201,10%@2201,10%@2201,33%@2201,7%@2201,"
                "5%@2201,27%@2201] EMC_FREQ 3%@3199 GR3D_FREQ 12%@[1300,1300] NVENC0 off NVDEC0 off NVJPG0 off "
                "NVJPG1 off VIC off OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@52.968C/52.968C "
                "soc2@48.406C/48.406C soc0@49.531C/49.531C gpu@47.625C/47.625C VDD_GPU_SOC 5139mW/5139mW/5139mW "
                "VDD_CPU_CV 3268mW/3268mW/3268mW VIN_SYS_5V0 5500mW/5500mW/5500mW")
THOR_JP7_ASSEMBLED = ("09-19-2025 10:00:00 RAM 4722/125772MB (lfb 1x512kB) SWAP 0/0MB (cached 0MB) "
                      "CPU [5%@2601,3%@2601,off,2%@2601] EMC_FREQ 2%@1866 GR3D_FREQ @[1000,1000,1000] "
                      "NVENC0 off NVDEC0 off VIC off APE 150 cpu@45.1C/47.0C gpu@44.0C/44.2C tj@46.3C/48.0C "
                      "VDD_GPU 9120mW/8800mW/9500mW VDD_CPU_SOC_MSS 4100mW/4000mW/4300mW VIN 30100mW/29800mW/31000mW")


@pytest.mark.parametrize(
    ("line", "cores", "online", "gpu_load", "gpu_mhz", "rails", "temp"),
    [
        (NANO_JP4, 4, 4, 0.0, [], {"POM_5V_IN": (2545, 2547), "POM_5V_GPU": (0, 0), "POM_5V_CPU": (549, 529)},
         ("GPU", 23.5)),
        (XAVIER_NX_JP5, 6, 4, 0.0, [114], {"VDD_IN": (2763, 2846), "VDD_CPU_GPU_CV": (650, 670), "VDD_SOC": (650, 711)},
         ("CPU", 46.5)),
        (ORIN_NANO_JP6, 6, 6, 0.0, [305], {"VDD_IN": (5251, 8535), "VDD_CPU_GPU_CV": (512, 1944),
                                           "VDD_SOC": (2720, 3659)}, ("tj", 49.312)),
        (AGX_ORIN_JP6, 12, 8, 0.0, [0, 0], {"VDD_GPU_SOC": (2412, 2412), "VDD_CPU_CV": (1607, 1607),
                                            "VIN_SYS_5V0": (4707, 4707)}, ("cpu", 52.562)),
        (AGX_ORIN_JP7, 12, 12, 12.0, [1300, 1300], {"VDD_GPU_SOC": (5139, 5139), "VDD_CPU_CV": (3268, 3268),
                                                    "VIN_SYS_5V0": (5500, 5500)}, ("gpu", 47.625)),
        (THOR_JP7_ASSEMBLED, 4, 3, None, [1000, 1000, 1000], {"VDD_GPU": (9120, 8800),
                                                             "VDD_CPU_SOC_MSS": (4100, 4000), "VIN": (30100, 29800)},
         ("tj", 46.3)),
    ],
    ids=["nano-jp4", "xavier-nx-jp5", "orin-nano-jp6", "agx-orin-jp6", "agx-orin-jp7", "thor-jp7-assembled"],
)
def test_parse_boards(line, cores, online, gpu_load, gpu_mhz, rails, temp):
    s = parse_line(line)
    assert s is not None
    assert len(s.cpu_load) == cores
    assert sum(v is not None for v in s.cpu_load) == online
    assert s.gpu_load == gpu_load
    assert s.gpu_mhz == gpu_mhz
    assert s.power_mw == rails  # RAM/SWAP "used/total" never taken for a rail
    name, value = temp
    assert s.temps_c[name] == value
    assert s.ram_used_mb is not None
    assert s.ram_total_mb > s.ram_used_mb
    assert s.emc_load is not None


def test_parse_details():
    s = parse_line(AGX_ORIN_JP6)
    assert s.time == "10-08-2026 04:40:02"
    assert s.engines["NVENC"] == "79%@166"
    assert s.engines["VIC"] == "36%@115"
    assert s.engines["APE"] == "174"
    assert s.emc_load == 3.0
    assert s.emc_mhz == 2133
    assert s.cpu_mhz[0] == 2188
    assert s.cpu_mhz[-1] is None
    assert s.cpu_load_mean == pytest.approx((14 + 9 + 11 + 7 + 20 + 3 + 5 + 8) / 8)
    nano = parse_line(NANO_JP4)
    assert nano.time is None
    assert nano.emc_mhz is None
    assert nano.swap_used_mb == 0
    assert nano.temps_c["PMIC"] == 100.0
    thor = parse_line(THOR_JP7_ASSEMBLED)
    assert thor.ram_total_mb == 125772
    assert thor.engines["NVENC0"] == "off"
    assert parse_line("tegrastats: some warning") is None
    assert parse_line("RAM 10/100MB CPU [5%@100] gpu@-256C").temps_c == {}  # -256C: sensor off


def test_summary_over_samples():
    samples = [parse_line(AGX_ORIN_JP6), parse_line(AGX_ORIN_JP7)]
    out = summarize_samples(samples)
    assert out["samples"] == 2
    assert out["gpu_load_pct"] == {"mean": 6.0, "max": 12.0}
    assert out["power_mw"]["VDD_GPU_SOC"] == {"mean": 3775.5, "max": 5139.0}
    assert out["temps_c_max"]["cpu"] == 52.968
    assert out["gpu_mhz_max"] == 1300
    assert out["emc_mhz_max"] == 3199
    thor = summarize_samples([parse_line(THOR_JP7_ASSEMBLED)])
    assert thor["gpu_load_pct"] is None  # Thor reports no GR3D load: null, not 0


def test_recorder_with_fake_tegrastats(tmp_path):
    """FAKE tegrastats (a Python script printing recorded lines): no Jetson here."""
    fake = tmp_path / "tegrastats"
    fake.write_text(textwrap.dedent(f"""\
        import sys, time
        print("tegrastats: starting", flush=True)
        for line in {[ORIN_NANO_JP6, AGX_ORIN_JP7] * 3!r}:
            print(line, flush=True)
            time.sleep(0.02)
        time.sleep(30)
        """))
    rec = TegrastatsRecorder(100, command=[sys.executable, str(fake)])
    with rec:
        import time

        deadline = time.monotonic() + 10
        while len(rec.samples) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    out = rec.summary()
    assert out["samples"] == 6
    assert out["unparsed_lines"] == 1
    assert len(out["lines"]) == 6
    assert out["cpu_load_pct"]["max"] == pytest.approx(sum([23, 10, 4, 14, 30, 18, 10, 10, 33, 7, 5, 27]) / 12, abs=0.01)
    assert set(out["power_mw"]) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC", "VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"}
    assert 0 < out["seconds"] < 10


def test_recorder_missing_command():
    from endoedge.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="cannot run"):
        TegrastatsRecorder(command=["/no/such/tegrastats"]).start()
