"""edge_ladder.bench / benchenv: statistics, tegrastats parsing, input generation, interleaving,
report files and CLI errors. The end-to-end tests time the real tiny checkpoint and its ONNX."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_ladder import bench, benchenv
from edge_ladder.cli import main as cli_main
from edge_ladder.frontend import face_crop, log_mel, square_box

# ---------------------------------------------------------------------------------------------
# statistics


def test_summarize_matches_hand_computed_nearest_rank_percentiles():
    # 20 samples, shuffled: 0.5, 1.0, ..., 10.0 ms
    samples = [0.5 * k for k in np.random.default_rng(3).permutation(np.arange(1, 21))]
    stats = bench.summarize(samples)
    assert list(stats) == ["min", "mean", "median", "p90", "p95", "p99", "max"]
    assert stats["min"] == 0.5 and stats["max"] == 10.0
    assert stats["mean"] == pytest.approx(5.25)
    assert stats["median"] == pytest.approx((5.0 + 5.5) / 2)     # even n: mean of the two middle
    assert stats["p90"] == 9.0      # ceil(0.90 * 20) = 18th sample
    assert stats["p95"] == 9.5      # ceil(0.95 * 20) = 19th
    assert stats["p99"] == 10.0     # ceil(0.99 * 20) = 20th


def test_percentiles_of_ten_and_odd_counts():
    ten = [7.0, 1.0, 3.0, 9.0, 5.0, 2.0, 10.0, 4.0, 8.0, 6.0]
    stats = bench.summarize(ten)
    assert stats["p90"] == 9.0      # the 9th of 10, not 10 (float (1-0.9)*10 rounding must not bite)
    assert stats["p95"] == 10.0 and stats["p99"] == 10.0
    odd = [3.0, 1.0, 2.0, 100.0, 4.0, 5.0, 6.0]
    stats = bench.summarize(odd)
    assert stats["median"] == 4.0
    assert stats["p90"] == 100.0    # ceil(6.3) = 7th
    assert bench.summarize([2.5]) == {k: 2.5 for k in bench.STAT_KEYS}
    # 1000 samples 1..1000: pXX is exactly XX * 10
    thousand = list(np.random.default_rng(0).permutation(np.arange(1, 1001)).astype(float))
    stats = bench.summarize(thousand)
    assert (stats["p90"], stats["p95"], stats["p99"]) == (900.0, 950.0, 990.0)
    with pytest.raises(bench.BenchError):
        bench.summarize([])


# ---------------------------------------------------------------------------------------------
# tegrastats and Jetson probes (recorded-format sample lines)

ORIN_NANO = ("11-14-2024 09:21:07 RAM 2831/7620MB (lfb 2x2MB) SWAP 0/3810MB (cached 0MB) "
             "CPU [12%@1510,8%@1510,4%@1510,6%@1510,0%@729,0%@729] EMC_FREQ 4%@2133 GR3D_FREQ 61%@[624] "
             "NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@48.5C soc2@46.281C soc0@46.968C "
             "gpu@47.218C tj@48.5C soc1@46.062C VDD_IN 7216mW/6904mW VDD_CPU_GPU_CV 2044mW/1876mW "
             "VDD_SOC 2286mW/2210mW")
AGX_ORIN = ("RAM 3116/30536MB (lfb 6226x4MB) SWAP 0/15268MB (cached 0MB) CPU [2%@729,1%@729,0%@729,"
            "0%@729,0%@729,0%@729,0%@729,0%@729,off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 37%@[305,611] "
            "NVENC off NVDEC off NVJPG off NVJPG1 off VIC off OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off "
            "APE 174 cv0@-256C cpu@45.25C soc2@42.687C soc0@43.312C cv1@-256C gpu@42.562C tj@45.25C "
            "soc1@42.281C cv2@-256C VDD_GPU_SOC 2388mW/2388mW VDD_CPU_CV 398mW/398mW "
            "VIN_SYS_5V0 2419mW/2419mW VDDQ_VDD2_1V8AO 302mW/302mW")
XAVIER_NX_JP4 = ("RAM 2010/6854MB (lfb 95x4MB) SWAP 0/3427MB (cached 0MB) CPU [1%@1190,0%@1190,0%@1190,"
                 "0%@1190,off,off] EMC_FREQ 0%@1600 GR3D_FREQ 12%@114 APE 150 MTS fg 0% bg 0% AO@38C "
                 "GPU@37.5C PMIC@50C AUX@36C CPU@38C thermal@37.6C VDD_IN 4170/4170 "
                 "VDD_CPU_GPU_CV 542/542 VDD_SOC 1295/1295")
NANO_JP4 = ("RAM 1521/3956MB (lfb 4x4MB) SWAP 0/1978MB (cached 0MB) CPU [10%@1479,6%@1479,4%@1479,8%@1479] "
            "EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 PLL@31C CPU@34C PMIC@100C GPU@32C AO@41C thermal@33C "
            "POM_5V_IN 3123/3098 POM_5V_GPU 0/0 POM_5V_CPU 546/530")
# Thor-style (JetPack 7): constructed from the documented field format, GR3D without a clock
THOR = ("08-25-2025 14:03:11 RAM 9861/125772MB (lfb 2x4MB) SWAP 0/0MB (cached 0MB) "
        "CPU [3%@2601,1%@2601,0%@2601,5%@2601,2%@2601,0%@2601,0%@2601,1%@2601,0%@2601,0%@2601,"
        "0%@2601,0%@2601,0%@2601,0%@2601] EMC_FREQ 2%@4266 GR3D_FREQ 47% cpu@51.2C tj@53.1C gpu@50.9C "
        "VDD_GPU 9874mW/9120mW VDD_CPU_SOC_MSS 7102mW/6950mW VIN_SYS_5V0 5210mW/5188mW VIN 31240mW/30012mW")


def test_tegrastats_orin_nano_uses_vdd_in():
    s = benchenv.parse_tegrastats_line(ORIN_NANO)
    assert (s["ram_used_mb"], s["ram_total_mb"]) == (2831, 7620)
    assert (s["gr3d_percent"], s["gr3d_mhz"]) == (61, 624)
    assert s["power_mw"] == 7216 and s["power_source"] == "VDD_IN"
    assert s["rails_mw"] == {"VDD_IN": 7216, "VDD_CPU_GPU_CV": 2044, "VDD_SOC": 2286}
    assert s["timestamp"] == "11-14-2024 09:21:07"
    assert s["cpu_percent"] == [12, 8, 4, 6, 0, 0]
    assert s["temperatures_c"]["gpu"] == pytest.approx(47.218)


def test_tegrastats_agx_orin_sums_rails_and_skips_absent_sensors():
    s = benchenv.parse_tegrastats_line(AGX_ORIN)
    assert (s["gr3d_percent"], s["gr3d_mhz"]) == (37, 611)       # two GPCs: the higher clock
    assert s["power_mw"] == 2388 + 398 + 2419 + 302 and s["power_source"] == "sum of rails"
    assert "cv0" not in s["temperatures_c"]                        # -256C: sensor absent
    assert len(s["cpu_percent"]) == 8                              # 'off' cores are not loads


def test_tegrastats_jetpack4_units_and_thor_style():
    xavier = benchenv.parse_tegrastats_line(XAVIER_NX_JP4)
    assert (xavier["gr3d_percent"], xavier["gr3d_mhz"], xavier["power_mw"]) == (12, 114, 4170)
    nano = benchenv.parse_tegrastats_line(NANO_JP4)
    assert nano["power_mw"] == 3123 and nano["power_source"] == "POM_5V_IN"
    thor = benchenv.parse_tegrastats_line(THOR)
    assert thor["gr3d_percent"] == 47 and "gr3d_mhz" not in thor
    assert thor["power_mw"] == 31240 and thor["power_source"] == "VIN"
    assert thor["ram_total_mb"] == 125772
    assert benchenv.parse_tegrastats_line("tegrastats: permission denied") is None
    assert benchenv.parse_tegrastats_line("") is None


def test_tegrastats_summary_energy_per_inference():
    lines = [ORIN_NANO.replace("VDD_IN 7216mW", f"VDD_IN {mw}mW") for mw in (6000, 7000, 8000)]
    samples = [benchenv.parse_tegrastats_line(line) for line in lines]
    summary = benchenv.summarize_tegrastats(samples, wall_s=2.0, queries=400)
    assert summary["samples"] == 3
    assert summary["power_mw"]["mean"] == pytest.approx(7000.0)
    # 7000 mW x 2 s / 400 queries = 35 mJ per inference
    assert summary["energy_per_inference_mj"] == pytest.approx(35.0)
    assert summary["gr3d_percent"]["mean"] == 61
    assert benchenv.summarize_tegrastats([], 1.0, 10) == {"samples": 0}


def test_jetson_probe_parsers():
    assert benchenv.parse_nv_tegra_release(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64") == "R36.4.3"
    assert benchenv.parse_nv_tegra_release("garbage") is None
    assert benchenv.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert benchenv.parse_nvpmodel("NV Power Mode: 15W\n2") == {"name": "15W", "id": 2}
    shown_on = ("SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit\nOnline CPUs: 0-11\n"
                "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600\n"
                "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\nEMC MinFreq=204000000 "
                "MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1\n")
    shown_off = shown_on.replace("GPU MinFreq=1300500000", "GPU MinFreq=306000000").replace(
        "CurrentFreq=1300500000", "CurrentFreq=306000000")
    assert benchenv.parse_jetson_clocks(shown_on)["state"] == "on"
    assert benchenv.parse_jetson_clocks(shown_off)["state"] == "off"
    assert benchenv.parse_jetson_clocks("") is None


def test_capture_environment_names_versions_without_importing_torch():
    code = ("import sys, json; from edge_ladder import benchenv; env = benchenv.capture_environment(); "
            "print(json.dumps({'torch_imported': 'torch' in sys.modules, 'env': env}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["torch_imported"] is False
    env = data["env"]
    assert env["cpu"]["model"] and env["cpu"]["usable_cores"] >= 1
    assert env["versions"]["numpy"] == np.__version__
    assert "onnxruntime" in env["versions"] and "edge_ladder" in env["versions"]
    assert env["os"]
    assert "cores" in benchenv.environment_line(env)


# ---------------------------------------------------------------------------------------------
# shapes and inputs


def test_window_shapes_are_the_2s_window():
    assert bench.window_shapes(1) == {"audio": (1, 198, 80), "face": (1, 20, 1, 48, 48)}
    assert bench.window_shapes(8)["face"][0] == 8


def test_parse_shapes_fills_the_missing_tensor_from_the_window():
    shapes = bench.parse_shapes("audio:3x97x80")
    assert shapes == {"audio": (3, 97, 80), "face": (3, 20, 1, 48, 48)}
    shapes = bench.parse_shapes("audio:2x97x80, face:2x13x1x48x48", batch=2)
    assert shapes["face"] == (2, 13, 1, 48, 48)


@pytest.mark.parametrize("text, needles", [
    ("audio:1x198", ["audio", "audio:BxT_ax80"]),
    ("audio:1x198x64", ["audio", "80"]),
    ("face:1x20x48x48", ["face", "face:BxT_vx1x48x48"]),
    ("face:1x20x1x32x32", ["face", "1x48x48"]),
    ("video:1x20x1x48x48", ["video", "audio:BxT_ax80", "face:BxT_vx1x48x48"]),
    ("audio_mask:1x198", ["audio_mask", "follow from audio and face"]),
    ("audio=1x198x80", ["audio=1x198x80", "NAME:DIMS"]),
    ("audio:1xTx80", ["audio:1xTx80", "positive integers"]),
    ("audio:0x198x80", ["audio", "positive"]),
    ("audio:1x198x80,face:2x20x1x48x48", ["batch", "B=1", "B=2"]),
    ("audio:1x198x80,audio:1x99x80", ["twice"]),
])
def test_parse_shapes_errors_name_the_tensor_and_the_form(text, needles):
    with pytest.raises(bench.BenchError) as info:
        bench.parse_shapes(text)
    for needle in needles:
        assert needle in str(info.value)


def test_parse_shapes_refuses_a_disagreeing_batch_flag():
    with pytest.raises(bench.BenchError, match="--batch 4 disagrees with --shapes batch 1"):
        bench.parse_shapes("audio:1x198x80", batch=4)


@pytest.mark.parametrize("t_audio, t_video, batch", [(97, 13, 5), (198, 20, 1), (3, 1, 2)])
def test_random_inputs_are_valid_and_never_zero(t_audio, t_video, batch):
    shapes = {"audio": (batch, t_audio, 80), "face": (batch, t_video, 1, 48, 48)}
    pool = bench.input_pool(shapes, seed=1, size=4)
    assert len(pool) == 4
    for inputs in pool:
        assert list(inputs) == ["audio", "audio_mask", "face", "face_mask", "presence"]
        assert all(v.dtype == np.float32 for v in inputs.values())
        assert inputs["audio"].shape == (batch, t_audio, 80)
        assert inputs["face"].shape == (batch, t_video, 1, 48, 48)
        np.testing.assert_array_equal(inputs["presence"], np.ones((batch, 2), np.float32))
        for name, mask_name in (("audio", "audio_mask"), ("face", "face_mask")):
            mask = inputs[mask_name]
            assert set(np.unique(mask)) <= {0.0, 1.0}
            assert mask[0].all()                                   # sample 0 is full length
            lengths = mask.sum(axis=1).astype(int)
            for i, length in enumerate(lengths):
                assert length >= 1 and mask[i, :length].all() and not mask[i, length:].any()  # a prefix
                valid = inputs[name][i, :length]
                assert np.all(valid != 0)                           # never zero where valid
                assert np.all(inputs[name][i, length:] == 0)        # padding as batch_inputs writes it
    # fresh data for each entry
    assert not np.array_equal(pool[0]["audio"], pool[1]["audio"])
    assert not np.array_equal(pool[0]["face"], pool[1]["face"])


def test_raw_window_pool_feeds_the_front_end_to_the_requested_shapes():
    shapes = {"audio": (2, 97, 80), "face": (2, 7, 1, 48, 48)}
    window = bench.raw_window_pool(shapes, seed=0, size=1)[0]
    assert window["pcm"][0].dtype == np.int16 and window["pcm"][0].any()
    name, preprocess = bench.make_preprocess(prefer_kernels=False)
    assert name == "numpy"
    inputs = preprocess(window)
    assert inputs["audio"].shape == (2, 97, 80) and inputs["face"].shape == (2, 7, 1, 48, 48)
    assert np.isfinite(inputs["audio"]).all() and inputs["face_mask"].all()
    # the same features the runtime's front-end defines
    np.testing.assert_array_equal(inputs["audio"][1], log_mel(window["pcm"][1]))
    box = square_box(window["boxes"][1], window["frames"][1].shape[1:])
    np.testing.assert_array_equal(inputs["face"][1, 6, 0], face_crop(window["frames"][1][6], box))
    if bench.kernels_built():   # the kernels/ host path computes the same features
        name, kernel_preprocess = bench.make_preprocess(prefer_kernels=True)
        assert name == "kernels"
        kernel_inputs = kernel_preprocess(window)
        np.testing.assert_allclose(kernel_inputs["audio"], inputs["audio"], atol=2e-3)
        np.testing.assert_allclose(kernel_inputs["face"], inputs["face"], atol=1e-3)


# ---------------------------------------------------------------------------------------------
# the timed loop with a fake clock: exact interleaving and ratios


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeRunner(bench.Runner):
    """Costs `cost_ms` of fake time per call and logs every call into a shared journal."""

    def __init__(self, label, cost_ms, clock, journal):
        self.label, self.backend, self.path = label, "fake", f"/models/{label}.onnx"
        self.cost_ms, self.clock, self.journal = cost_ms, clock, journal
        self.info = {}

    def __call__(self, inputs):
        assert inputs["audio"].any()
        self.journal.append((self.label, id(inputs)))
        self.clock.now += self.cost_ms / 1e3
        return {"compute": self.cost_ms * 0.75}


def _fake(costs, clock=None):
    clock = clock or FakeClock()
    journal = []
    return [FakeRunner(label, cost, clock, journal) for label, cost in costs], clock, journal


def test_measure_interleaves_round_robin_with_equal_iterations():
    runners, clock, journal = _fake([("A", 4.0), ("B", 1.0), ("C", 2.0)])
    pool = bench.input_pool({"audio": (1, 11, 80), "face": (1, 3, 1, 48, 48)}, size=5)
    records = bench.measure(runners, pool, warmup_ms=10.0, iterations=7, duration_s=0.05, clock=clock)
    labels = [label for label, _ in journal]
    assert labels == ["A", "B", "C"] * (len(labels) // 3)          # strict A B C A B C ...
    counts = [r["iterations"] for r in records]
    assert counts[0] == counts[1] == counts[2] >= 7
    # timed loop stops once >= 7 rounds AND >= 50 ms (7 ms per round): ceil(50 / 7) = 8 rounds
    assert counts[0] == 8
    # warm-up (>= 30 ms at 7 ms per round = 5 rounds) is not recorded
    assert len(labels) == 3 * (5 + 8)
    assert records[0]["latency_samples_ms"] == pytest.approx([4.0] * 8)
    assert records[1]["stage_samples_ms"]["compute"] == pytest.approx([0.75] * 8)
    # each round gives every model the same input set, consecutive rounds different ones
    timed = journal[-24:]
    assert timed[0][1] == timed[1][1] == timed[2][1] and timed[0][1] != timed[3][1]


def test_benchmark_compare_reports_speedup_against_the_first_model(tmp_path):
    runners, clock, _ = _fake([("torch-ref", 6.0), ("ort-fp32", 2.0), ("ort-fp16", 1.5)])
    report = bench.benchmark(runners, compare=True, warmup_ms=5, iterations=10, duration_s=0.2,
                             env=False, clock=clock, shapes={"audio": (1, 97, 80), "face": (1, 13, 1, 48, 48)})
    assert report["interleaved"] is True
    assert report["speedup"] == pytest.approx({"torch-ref": 1.0, "ort-fp32": 3.0, "ort-fp16": 4.0})
    assert "first model" in report["speedup_definition"]
    run = report["runs"][1]
    assert run["latency_ms"]["mean"] == pytest.approx(2.0)
    assert run["throughput_qps"] == pytest.approx(500.0)           # 1 query / 2 ms
    assert run["iterations"] == report["runs"][0]["iterations"]
    assert run["shapes"]["audio_mask"] == [1, 97]
    assert run["stages_ms"]["compute"]["mean"] == pytest.approx(1.5)
    out = bench.write_json(tmp_path / "compare.json", report)
    loaded = json.loads(out.read_text())
    assert set(loaded) >= {"runs", "speedup", "env", "batch"}
    assert not list(tmp_path.glob(".*tmp"))                         # atomic: no temp file left
    table = bench.markdown_table(report)
    assert "| ort-fp32.onnx | fake | 1 | 2.000 |" in table and "3.00x" in table


def test_compare_needs_two_models_and_rejects_bad_counts():
    runners, clock, _ = _fake([("A", 1.0)])
    with pytest.raises(bench.BenchError, match="at least two models"):
        bench.benchmark(runners, compare=True, env=False, clock=clock)
    with pytest.raises(bench.BenchError, match="iterations"):
        bench.measure(runners, [{}], iterations=0, clock=clock)
    with pytest.raises(bench.BenchError, match="batch 4 disagrees"):
        bench.benchmark(runners, batch=4, shapes=bench.window_shapes(1), env=False, clock=clock)


class SleepRunner(bench.Runner):
    def __init__(self, label, seconds):
        self.label, self.backend, self.path, self.info, self.seconds = label, "fake", f"{label}.onnx", {}, seconds

    def __call__(self, inputs):
        time.sleep(self.seconds)
        return {}


def test_tegrastats_sampled_during_the_run_gives_energy_per_inference(tmp_path, monkeypatch):
    fake = tmp_path / "tegrastats"
    fake.write_text(f"#!/bin/sh\nwhile true; do echo '{ORIN_NANO}'; sleep 0.02; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    report = bench.benchmark([SleepRunner("A", 0.002), SleepRunner("B", 0.001)], compare=True, warmup_ms=5,
                             iterations=5, duration_s=0.25, shapes={"audio": (1, 11, 80), "face": (1, 3, 1, 48, 48)})
    teg = report["runs"][0]["tegrastats"]
    assert teg["samples"] >= 1 and teg["power_mw"]["mean"] == 7216 and teg["power_mw"]["source"] == "VDD_IN"
    wall = sum(run["wall_s"] for run in report["runs"])
    queries = sum(run["iterations"] for run in report["runs"])
    assert teg["energy_per_inference_mj"] == pytest.approx(7216 * wall / queries)
    assert "mJ/inference" in bench.markdown_table(report)


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_reports_bad_shapes_clearly(tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not used")
    code = cli_main(["bench", str(model), "--shapes", "audio:1x198x64"])
    err = capsys.readouterr().err
    assert code == 2
    assert "audio" in err and "audio:BxT_ax80" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, needle", [
    (["--batch", "0"], "argument --batch: expected an integer >= 1"),
    (["--histogram", "out.svg"], "PNG"),
    (["--shapes", "audio:2x198x80", "--batch", "3"], "--batch 3 disagrees"),
])
def test_cli_rejects_bad_flags(tmp_path, capsys, argv, needle):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not used")
    assert cli_main(["bench", str(model), *argv]) == 2
    assert needle in capsys.readouterr().err


def test_model_spec_errors(tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(bench.BenchError, match="onnxruntime backend runs"):
        bench.parse_model_spec(f"{onnx}@torch")
    with pytest.raises(bench.BenchError, match="expected one of"):
        bench.parse_model_spec(f"{onnx}@tensorflow")
    with pytest.raises(bench.BenchError, match="does not exist"):
        bench.parse_model_spec(str(tmp_path / "missing.onnx"))
    with pytest.raises(bench.BenchError, match="suffix"):
        bench.parse_model_spec(str(tmp_path / "model.bin"))
    spec = bench.parse_model_spec(str(onnx))
    assert (spec.backend, spec.label) == ("onnxruntime", "onnxruntime:model.onnx")


def test_importing_bench_does_not_import_torch():
    code = "import sys, edge_ladder.bench, edge_ladder.benchenv; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# end to end on the real tiny model: checkpoint (torch eager) vs pruned ONNX fp32 / fp16


@pytest.mark.slow
def test_cli_compare_torch_and_onnx_writes_json_md_png(tiny_run, tiny_export, tmp_path, capsys):
    ckpt = tiny_run / "checkpoint.pt"
    out = tmp_path / "bench"
    code = cli_main(["bench", str(ckpt), str(tiny_export / "model.onnx"), str(tiny_export / "model.fp16.onnx"),
                     "--compare", "--warmup", "20", "--iterations", "5", "--duration", "0.3",
                     "--json", str(out / "compare.json"), "--md", str(out / "compare.md"),
                     "--histogram", str(out / "latency.png")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "compare.json").read_text())
    backends = [run["backend"] for run in report["runs"]]
    assert backends == ["torch", "onnxruntime", "onnxruntime"]
    for run in report["runs"]:
        assert set(run) >= {"backend", "model", "latency_ms", "throughput_qps", "iterations", "env",
                            "batch", "shapes", "stages_ms"}
        assert run["iterations"] >= 5 and run["latency_ms"]["min"] > 0
        assert run["latency_ms"]["min"] <= run["latency_ms"]["median"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]
    assert report["runs"][1]["stages_ms"]["compute"]["mean"] > 0     # the runtime's own timing
    fp32_label = report["runs"][1]["label"]
    assert report["speedup"][fp32_label] == pytest.approx(
        report["runs"][0]["latency_ms"]["mean"] / report["runs"][1]["latency_ms"]["mean"])
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "speedup" in (out / "compare.md").read_text()
    assert "onnxruntime" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_single_model_with_preprocess_reports_front_end_and_both_latencies(tiny_export, tmp_path):
    out = tmp_path / "one.json"
    code = cli_main(["bench", str(tiny_export / "model.onnx"), "--shapes", "audio:2x97x80,face:2x9x1x48x48",
                     "--preprocess", "--warmup", "10", "--iterations", "3", "--duration", "0.1",
                     "--threads", "1", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"backend", "model", "latency_ms", "throughput_qps", "iterations", "env", "batch", "shapes"}
    assert report["runner"]["intra_op_threads"] == 1
    assert report["batch"] == 2 and report["preprocess"] in ("numpy", "kernels")
    pre = report["stages_ms"]["preprocess"]["mean"]
    model_only = report["latency_ms"]["mean"]
    assert report["latency_with_preprocess_ms"]["mean"] == pytest.approx(pre + model_only, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# bench --stream


def test_cli_stream_reports_cpu_share_per_stage_faces_and_latency(tiny_export, tmp_path, capsys):
    out = tmp_path / "stream.json"
    md = tmp_path / "stream.md"
    code = cli_main(["bench", str(tiny_export / "model.onnx"), "--stream", "--camera", "640x360@15", "--duration", "3",
                     "--warmup", "0", "--window", "1.0", "--json", str(out), "--md", str(md)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "stream" and report["camera"] == "640x360@15" and report["intra_op_threads"] == 1
    assert set(report["stages_cpu_share"]) == {"audio framing", "log-mel", "detection", "tracking", "crops",
                                               "model", "other"}
    assert all(share >= 0 for share in report["stages_cpu_share"].values())
    # the stages are charged in process CPU inside the feed calls: they add up to (at most) the calls' total
    assert 0 < report["stages_sum_cpu_share"] <= report["feed_process_cpu_share"] * 1.05 + 1e-4
    assert report["feed_to_model"] == pytest.approx(report["feed_process_cpu_share"] / report["model_cpu_share"])
    assert report["windows"] == 5 and report["windows_per_s"] == pytest.approx(5 / 3)   # 1 s windows, 0.5 s hop
    assert report["faces"]["windows_with_face"] >= 0.95 and report["faces"]["tracker"]["region"] > 0
    assert report["latency_ms"]["p99"] >= report["latency_ms"]["mean"] > 0 and "p99" in report["latency_cpu_ms"]
    assert set(report["met"]) == {"feed_cpu_share", "feed_to_model", "face_windows", "latency_p99"}
    assert "env" in report and report["load_average"]["start"] is not None
    text = capsys.readouterr().out
    assert "feed calls, thread CPU" in text and "windows with a face" in text and md.read_text().startswith("| measure")


@pytest.mark.parametrize("argv, needle", [
    (["--stream", "--compare"], "--compare does not apply to --stream"),
    (["--stream", "--batch", "2"], "--batch does not apply to --stream"),
    (["--camera", "640x480@30"], "--camera applies to --stream only"),
    (["--stream", "--camera", "640x480"], "is not WIDTHxHEIGHT@FPS"),
    (["--stream", "--duration", "0.5"], "--duration must be at least 1 s"),
    (["--stream", "--block", "0"], "--block must be 1-1000 ms"),
])
def test_cli_stream_rejects_bad_flags(tiny_export, capsys, argv, needle):
    assert cli_main(["bench", str(tiny_export / "model.onnx"), *argv]) == 2
    assert needle in capsys.readouterr().err


def test_cli_stream_refuses_a_checkpoint_and_two_models(tiny_run, tiny_export, capsys):
    assert cli_main(["bench", str(tiny_run / "checkpoint.pt"), "--stream"]) == 2
    assert "Export it first: edge-ladder export" in capsys.readouterr().err
    onnx = str(tiny_export / "model.onnx")
    assert cli_main(["bench", onnx, onnx, "--stream"]) == 2
    assert "--stream benchmarks one MODEL; got 2" in capsys.readouterr().err


def test_talking_head_shows_a_face_the_detector_finds_at_every_camera_size():
    from edge_ladder.faces import FaceDetector
    from edge_ladder.stream_bench import TalkingHead, arrival_order, parse_camera
    for mode in ("640x480@30", "1280x720@30", "1920x1080@30"):
        camera = parse_camera(mode)
        head = TalkingHead(camera, 2.0, seed=1)
        frame = head.frame(1.3)
        assert frame.shape == (camera.height, camera.width, 3) and frame.dtype == np.uint8
        box = FaceDetector().detect(frame)
        assert box is not None and 0.15 * camera.height < box[3] < 0.45 * camera.height
    assert head.pcm(2.0).shape == (32000,) and head.pcm(2.0).dtype == np.int16
    events = arrival_order(1.0, parse_camera("320x240@10"), 1600, camera_delay_s=0.05)
    assert [e for e in events if e[1] == "audio"][0] == (0.1, "audio", 0)
    frames = [e for e in events if e[1] == "frame"][:2]
    assert [e[2] for e in frames] == [0, 1] and [e[0] for e in frames] == pytest.approx([0.05, 0.15])
    assert [e[0] for e in events] == sorted(e[0] for e in events)
