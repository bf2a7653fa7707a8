"""Packaging: the wheel installs one `kvcache` package, and start-up stays light."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_help_does_not_import_heavy_modules(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from kvcache.cli.main import app\n"
        "try:\n    app(['--help'], prog_name='kvcache')\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'pandas', 'matplotlib', 'numpy', 'tiktoken') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout


def test_import_from_outside_the_repository(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import kvcache.engine, kvcache.cli, kvcache.analyzers, kvcache.kernels; print('ok')"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.skipif(os.environ.get("KVCACHE_SKIP_WHEEL") == "1", reason="KVCACHE_SKIP_WHEEL=1")
def test_regular_install_layout(tmp_path: Path) -> None:
    """Build a wheel and install it (no deps) into a bare target: it must import as kvcache.*."""
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check", "-w", str(wheel_dir), str(REPO)],
        capture_output=True, text=True,
    )
    if build.returncode != 0:
        pytest.fail(f"building the wheel failed: {build.stderr[-2000:]}")
    wheel = next(wheel_dir.glob("kvcache-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert all(t == "kvcache" or t.endswith(".dist-info") for t in top), top
    for pkg in ("cli", "engine", "engine/traces", "kernels", "analyzers"):
        assert f"kvcache/{pkg}/__init__.py" in names
    assert "kvcache/engine/data/model_shapes.json" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check",
                    "--target", str(target), str(wheel)], check=True, capture_output=True)
    assert not (target / "cli").exists() and not (target / "engine").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import kvcache.engine, kvcache.engine.capacity as c; "
            "print(kvcache.engine.__file__.startswith(%r), c.get_model_shape('llama-3.1-8b').num_hidden_layers)" % str(target))
    out = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, %r); " % str(target) + code],
                         cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "32"]
