"""packaging/pip-install-progress.py: the long compile shows progress, a failure shows why."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "packaging" / "pip-install-progress.py"


def _module():
    spec = importlib.util.spec_from_file_location("pip_install_progress", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pip_chatter_becomes_a_few_lines_with_steps_and_time_left(monkeypatch):
    mod = _module()
    out = io.StringIO()
    clock = iter(float(t) for t in range(0, 10_000, 5))
    monkeypatch.setattr(mod.time, "monotonic", lambda: next(clock))
    progress = mod.Progress(out)
    lines = ["Collecting numpy", "  Using cached numpy-2.0.whl",
             "Building wheel for llama-cpp-python (pyproject.toml): started",
             "  -- Configuring done", "  /usr/bin/g++ -O3 -c ggml.c"]
    lines += [f"  [{n}/40] /usr/bin/g++ -c file{n}.cpp" for n in range(1, 41)]
    lines += ["Successfully built llama-cpp-python", "Successfully installed llama-cpp-python"]
    for text in lines:
        progress.line(text)
    shown = out.getvalue().splitlines()
    assert shown[0] == "Using cached numpy-2.0.whl"
    assert shown[1].startswith("compiling llama-cpp-python (llama.cpp) from source")
    steps = [s for s in shown if "step" in s]
    assert steps[-1].startswith("  llama-cpp-python: step 40/40")
    assert any("left" in s for s in steps) and len(steps) < 40   # throttled, with an estimate
    assert "g++" not in out.getvalue() and "Configuring" not in out.getvalue()
    assert shown[-1] == "Successfully installed llama-cpp-python"


def test_a_failing_pip_returns_its_code_and_shows_its_last_lines(tmp_path):
    # A real pip, asked for a package that is nowhere: its error reaches the user.
    out = subprocess.run([sys.executable, str(SCRIPT), sys.executable, "--no-index",
                          "--find-links", str(tmp_path), "edgevoice-no-such-package"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "pip failed" in out.stdout and "edgevoice-no-such-package" in out.stdout
