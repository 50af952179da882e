"""`make wheel`: the file to copy to the robot. It builds without setuptools deprecation warnings
(project.license is an SPDX string), holds every module of the package (runtime, export, the
kernels binding), and the runtime runs from it with torch unimportable, as on a Jetson."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# installed by a sitecustomize on PYTHONPATH: `import torch` fails as it does on a Jetson without PyTorch
BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked: the runtime must not import it")
            return None
    sys.meta_path.insert(0, NoTorch())
""")


def expected_members() -> set:
    """Every module of the source tree as the wheel must name it (export/ -> edge_ladder/export/...)."""
    names = set()
    for folder, prefix in (("edge_ladder", "edge_ladder"), ("export", "edge_ladder/export"),
                           ("kernels", "edge_ladder/kernels")):
        for path in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                names.add(f"{prefix}/{path.relative_to(REPO / folder).as_posix()}")
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(["make", "wheel", f"DIST={dist}", f"PYTHON={sys.executable}"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    wheels = sorted(dist.glob("edge_ladder-*-py3-none-any.whl"))
    assert len(wheels) == 1, f"expected one pure-Python wheel in {dist}; got {os.listdir(dist)}"
    return wheels[0], done.stdout + done.stderr


@pytest.mark.slow
def test_make_wheel_builds_without_license_deprecation(wheel):
    path, log = wheel
    assert "deprecated" not in log.lower(), log[-3000:]     # was: `project.license` as a TOML table is deprecated
    with zipfile.ZipFile(path) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "Provides-Extra: jetson" in metadata.splitlines()


@pytest.mark.slow
def test_the_wheel_holds_the_runtime_export_and_kernels_binding(wheel):
    path, _ = wheel
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    expected = expected_members()
    assert {"edge_ladder/runtime/__init__.py", "edge_ladder/runtime/stream.py", "edge_ladder/export/engine.py",
            "edge_ladder/kernels/__init__.py", "edge_ladder/atomic.py"} <= expected
    assert sorted(expected - names) == []
    assert not any(n.startswith(("export/", "kernels/", "tests/")) for n in names)   # no top-level `export`


@pytest.mark.slow
def test_the_runtime_runs_from_the_installed_wheel_without_torch(wheel, tiny_export, tiny_corpus, tmp_path):
    path, _ = wheel
    target, hooks = tmp_path / "site", tmp_path / "hooks"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                           str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(target)])}
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import edge_ladder, edge_ladder.export, edge_ladder.kernels
        from edge_ladder import runtime
        from edge_ladder.runtime import cli, stream
        for module in (edge_ladder, edge_ladder.export, edge_ladder.kernels, runtime):
            assert module.__file__.startswith({str(target)!r}), module.__file__
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch imported")
        model = runtime.load({str(tiny_export / 'model.onnx')!r})
        rng = np.random.default_rng(0)
        result = model.predict_clip(rng.standard_normal((97, 80)).astype(np.float32),
                                    rng.standard_normal((9, 48, 48)).astype(np.float32), np.ones(9, bool))
        assert result.probs.shape == (1, 6)
        assert "torch" not in sys.modules
        print("ok", result.labels[0])
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("ok"), (done.stdout + done.stderr)[-3000:]
    # the command line too, on one of the generated corpus's clips
    wav = sorted((tiny_corpus / "AudioWAV").glob("*.wav"))[0]
    flv = tiny_corpus / "VideoFlash" / f"{wav.stem}.flv"
    done = subprocess.run([sys.executable, "-m", "edge_ladder", "infer", str(tiny_export / "model.onnx"),
                           "--audio", str(wav), "--video", str(flv), "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"label"' in done.stdout
