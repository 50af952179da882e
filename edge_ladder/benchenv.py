"""Environment capture for benchmark reports, and Jetson tegrastats sampling.

Every benchmark figure is written beside the machine it came from: CPU model and cores, GPU and
driver, CUDA / TensorRT / ONNX Runtime / numpy / torch / edge-ladder versions, OS and, on a
Jetson, the L4T release, nvpmodel mode, jetson_clocks state and tegrastats samples (RAM,
GR3D_FREQ, input power -> energy per inference).

Nothing here runs at import: `capture_environment()` probes when called. Library versions come
from package metadata, so capturing them never imports torch or TensorRT.

The parsers (`parse_tegrastats_line`, `parse_nv_tegra_release`, `parse_nvpmodel`,
`parse_jetson_clocks`) are pure functions of text so they are tested on recorded lines.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import threading
import time
from importlib import metadata
from pathlib import Path

# distribution name -> key in the report. Metadata only: nothing is imported.
_VERSIONED = {"edge-ladder": "edge_ladder", "numpy": "numpy", "onnxruntime": "onnxruntime",
              "onnxruntime-gpu": "onnxruntime_gpu", "onnx": "onnx", "torch": "torch",
              "tensorrt": "tensorrt", "pycuda": "pycuda", "opencv-python-headless": "opencv"}


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    """stdout of a short probe command, or None when it is absent or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def package_versions() -> dict:
    versions = {}
    for dist, key in _VERSIONED.items():
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    if "tensorrt" not in versions:
        # JetPack installs TensorRT's Python bindings as a system package (python3-libnvinfer)
        # whose dist name varies by release; the module's own metadata is the fallback.
        for dist in ("tensorrt_libs", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12"):
            try:
                versions["tensorrt"] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def cpu_info() -> dict:
    model = None
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            model = match.group(1).strip()
            break
    if model is None:
        lscpu = _run(["lscpu"]) or ""
        match = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
        model = match.group(1).strip() if match else (platform.processor() or platform.machine())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "logical_cores": os.cpu_count(), "usable_cores": usable,
            "machine": platform.machine()}


def gpu_info() -> dict:
    """nvidia-smi when present (desktop GPUs; recent JetPacks ship it too), else the Jetson
    device-tree model. Empty dict: no NVIDIA GPU found."""
    info: dict = {}
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if out:
        gpus = [dict(zip(("name", "driver", "memory"), (c.strip() for c in line.split(","))))
                for line in out.strip().splitlines() if line.strip()]
        info["gpus"] = gpus
        header = _run(["nvidia-smi"]) or ""
        match = re.search(r"CUDA Version:\s*([\d.]+)", header)
        if match:
            info["cuda_driver_api"] = match.group(1)
    model = _read("/proc/device-tree/model")
    if model and ("jetson" in model.lower() or "tegra" in model.lower() or "nvidia" in model.lower()):
        info["board"] = model.strip("\x00\n ")
    return info


def cuda_toolkit_version() -> str | None:
    for path in ("/usr/local/cuda/version.json", "/usr/local/cuda/version.txt"):
        text = _read(path)
        if text:
            match = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', text) or \
                    re.search(r"CUDA Version\s+([\d.]+)", text)
            if match:
                return match.group(1)
    out = _run(["nvcc", "--version"])
    if out:
        match = re.search(r"release ([\d.]+)", out)
        if match:
            return match.group(1)
    return None


# ---------------------------------------------------------------------------------------------
# Jetson probes (pure parsers + thin wrappers)


def parse_nv_tegra_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.3, GCID: ...' -> 'R36.4.3'."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return f"R{match.group(1)}.{match.group(2)}" if match else None


def parse_nvpmodel(text: str) -> dict | None:
    """`nvpmodel -q` output ('NV Power Mode: MAXN\\n0') -> {'name': 'MAXN', 'id': 0}."""
    match = re.search(r"NV Power Mode:[ \t]*(\S+)[ \t]*(?:\r?\n[ \t]*(\d+))?", text or "")
    if not match:
        return None
    return {"name": match.group(1), "id": int(match.group(2)) if match.group(2) else None}


def parse_jetson_clocks(text: str) -> dict | None:
    """`jetson_clocks --show` -> {'state': 'on'|'off', 'gpu_mhz': current}. jetson_clocks pins
    every clock at its maximum, so the GPU line shows MinFreq == MaxFreq when it is on."""
    match = re.search(r"^GPU\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", text or "", re.MULTILINE)
    if not match:
        return None
    low, high, current = (int(v) for v in match.groups())
    return {"state": "on" if low == high else "off", "gpu_min_hz": low, "gpu_max_hz": high,
            "gpu_current_hz": current}


def jetson_info() -> dict | None:
    """L4T release, nvpmodel mode and jetson_clocks state; None on a machine that is no Jetson."""
    release_text = _read("/etc/nv_tegra_release")
    if release_text is None:
        return None
    info = {"l4t": parse_nv_tegra_release(release_text)}
    nvp = _run(["nvpmodel", "-q"])
    info["nvpmodel"] = parse_nvpmodel(nvp) if nvp else "unknown (nvpmodel -q failed or absent)"
    clocks = _run(["jetson_clocks", "--show"])
    info["jetson_clocks"] = (parse_jetson_clocks(clocks) if clocks else None) or \
        "unknown (jetson_clocks --show needs root: run the benchmark with sudo to record it)"
    return info


def capture_environment() -> dict:
    """Everything a reader needs to judge a figure. Probes the machine now (subprocesses)."""
    env = {
        "os": platform.platform(),
        "python": platform.python_version(),
        "hostname": platform.node(),
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "cuda": cuda_toolkit_version(),
        "versions": package_versions(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        # other work on the machine when the run started (a loaded CPU makes every figure noisy)
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    jetson = jetson_info()
    if jetson is not None:
        env["jetson"] = jetson
    return env


def environment_line(env: dict) -> str:
    """One human line: 'AMD EPYC (2 cores) | no NVIDIA GPU | onnxruntime 1.32.0, ...'."""
    cpu = env.get("cpu", {})
    parts = [f"{cpu.get('model', '?')} ({cpu.get('usable_cores', '?')} cores)"]
    gpu = env.get("gpu", {})
    if gpu.get("gpus"):
        parts.append(", ".join(f"{g['name']} (driver {g.get('driver', '?')})" for g in gpu["gpus"]))
    elif gpu.get("board"):
        parts.append(gpu["board"])
    else:
        parts.append("no NVIDIA GPU")
    if env.get("cuda"):
        parts.append(f"CUDA toolkit {env['cuda']}")
    jetson = env.get("jetson")
    if jetson:
        nvp = jetson.get("nvpmodel")
        clocks = jetson.get("jetson_clocks")
        parts.append(f"L4T {jetson.get('l4t')}, nvpmodel {nvp['name'] if isinstance(nvp, dict) else nvp}, "
                     f"jetson_clocks {clocks['state'] if isinstance(clocks, dict) else 'unknown'}")
    versions = env.get("versions", {})
    parts.append(", ".join(f"{k} {v}" for k, v in versions.items()))
    parts.append(env.get("os", "?"))
    if env.get("load_average"):
        parts.append(f"load average {env['load_average'][0]:g} at start")
    return " | ".join(parts)


# ---------------------------------------------------------------------------------------------
# tegrastats

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
# power rails: 'VDD_IN 7216mW/6904mW' (JetPack 5+: now/average), 'POM_5V_IN 3123/3098' (JetPack 4)
_RAIL = re.compile(r"\b((?:VDD|VDDQ|VIN|POM)(?:_[A-Z0-9_]+)?)\s+(\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_TEMP = re.compile(r"\b([a-zA-Z0-9_]+)@(-?[\d.]+)C\b")
_STAMP = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")
# Rails that measure the whole module input, best first. Orin Nano/NX: VDD_IN; TX2/Nano:
# POM_5V_IN; boards without one (AGX Orin: VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 + ...)
# fall back to the sum of every reported rail.
_TOTAL_RAILS = ("VDD_IN", "VIN", "POM_5V_IN")


def parse_tegrastats_line(line: str) -> dict | None:
    """One tegrastats line -> {'ram_used_mb', 'ram_total_mb', 'gr3d_percent', 'gr3d_mhz',
    'rails_mw' {name: instantaneous mW}, 'power_mw' (module input), 'power_source', ...}.
    None for a line that is not a tegrastats sample. Units: MB, %, MHz, mW, degrees C."""
    ram = _RAM.search(line or "")
    if not ram:
        return None
    sample: dict = {"ram_used_mb": int(ram.group(1)), "ram_total_mb": int(ram.group(2))}
    stamp = _STAMP.match(line)
    if stamp:
        sample["timestamp"] = stamp.group(1)
    swap = _SWAP.search(line)
    if swap:
        sample["swap_used_mb"] = int(swap.group(1))
    gr3d = _GR3D.search(line)
    if gr3d:
        sample["gr3d_percent"] = int(gr3d.group(1))
        if gr3d.group(2):
            freqs = [int(f) for f in gr3d.group(2).split(",") if f]
            sample["gr3d_mhz"] = max(freqs)
    emc = _EMC.search(line)
    if emc:
        sample["emc_percent"] = int(emc.group(1))
    cpu = _CPU.search(line)
    if cpu:
        loads = [int(m) for m in re.findall(r"(\d+)%", cpu.group(1))]
        sample["cpu_percent"] = loads
    rails = {name: int(now) for name, now, _avg in _RAIL.findall(line)}
    sample["rails_mw"] = rails
    total = next((name for name in _TOTAL_RAILS if name in rails), None)
    if total:
        sample["power_mw"], sample["power_source"] = rails[total], total
    elif rails:
        sample["power_mw"], sample["power_source"] = sum(rails.values()), "sum of rails"
    temps = {name: float(value) for name, value in _TEMP.findall(line) if float(value) > -200}
    if temps:
        sample["temperatures_c"] = temps
    return sample


def summarize_tegrastats(samples: list[dict], wall_s: float, queries: int) -> dict:
    """Mean/peak of the samples and energy per inference = mean power x wall time / queries.
    mW x s = mJ, so the result is in millijoules per query (one sample of the batch)."""
    if not samples:
        return {"samples": 0}
    out: dict = {"samples": len(samples)}
    ram = [s["ram_used_mb"] for s in samples]
    out["ram_used_mb"] = {"mean": sum(ram) / len(ram), "max": max(ram), "total": samples[0]["ram_total_mb"]}
    gr3d = [s["gr3d_percent"] for s in samples if "gr3d_percent" in s]
    if gr3d:
        out["gr3d_percent"] = {"mean": sum(gr3d) / len(gr3d), "max": max(gr3d)}
    mhz = [s["gr3d_mhz"] for s in samples if "gr3d_mhz" in s]
    if mhz:
        out["gr3d_mhz"] = {"mean": sum(mhz) / len(mhz), "max": max(mhz)}
    power = [s["power_mw"] for s in samples if "power_mw" in s]
    if power:
        mean_mw = sum(power) / len(power)
        out["power_mw"] = {"mean": mean_mw, "max": max(power), "source": samples[-1].get("power_source")}
        if queries > 0:
            out["energy_per_inference_mj"] = mean_mw * wall_s / queries
    return out


class TegrastatsSampler:
    """Runs `tegrastats --interval MS` in the background while a benchmark runs.

        with TegrastatsSampler(100) as sampler:
            ...timed loop...
        sampler.samples  # parsed lines

    `available()` is False on a machine without tegrastats; the sampler then records nothing.
    """

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats"):
        self.interval_ms = int(interval_ms)
        self.command = command
        self.lines: list[str] = []
        self._process = None
        self._reader = None

    def available(self) -> bool:
        return shutil.which(self.command) is not None

    def __enter__(self):
        if self.available():
            self._process = subprocess.Popen([self.command, "--interval", str(self.interval_ms)],
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self):
        for line in self._process.stdout:
            self.lines.append(line.rstrip("\n"))

    def __exit__(self, *exc):
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._reader.join(timeout=5)
        return False

    @property
    def samples(self) -> list[dict]:
        parsed = (parse_tegrastats_line(line) for line in self.lines)
        return [s for s in parsed if s is not None]
