"""Tests of fer2neuro.lava_compat: lava-nc 0.10 / lava-dl 0.6 on Python 3.11.

The import checks run in fresh interpreters so that their outcome does not
depend on what other tests imported first; the network runs here, in the
test process, and checks Lava's LIF dynamics against a hand-written model.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fer2neuro  # noqa: F401  (installs the compatibility layer)
from fer2neuro import lava_compat
from fer2neuro.errors import Fer2NeuroError


def _repo_root() -> Path:
    """The directory above this file that holds fer2neuro's pyproject.toml."""
    for parent in Path(__file__).resolve().parents:
        pyproject = parent / "pyproject.toml"
        if pyproject.is_file() and 'name = "fer2neuro"' in pyproject.read_text():
            return parent
    raise AssertionError(f"no fer2neuro pyproject.toml above {__file__}")


ROOT = _repo_root()

lava_missing = importlib.util.find_spec("lava") is None
needs_lava = pytest.mark.skipif(lava_missing, reason="lava-nc is not installed")


def _run_python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, with this checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


# ---------------------------------------------------------------------------
# Test collection: our tests/, not lava's top-level `tests` package
# ---------------------------------------------------------------------------

def test_collects_the_projects_own_tests_dir():
    here = Path(__file__).resolve()
    assert here.parent == ROOT / "tests"
    assert "site-packages" not in here.parts
    # With --import-mode=importlib (pyproject.toml) our test modules are not
    # imported through a `tests` package that lava's wheel could shadow.
    assert not (ROOT / "tests" / "__init__.py").exists()


# ---------------------------------------------------------------------------
# install() itself
# ---------------------------------------------------------------------------

def _our_finders():
    return [f for f in sys.meta_path if getattr(f, lava_compat._MARKER, False)]


def test_import_fer2neuro_installs_the_finder_once():
    assert len(_our_finders()) == 1
    lava_compat.install()
    lava_compat.install()
    assert len(_our_finders()) == 1


def test_import_fer2neuro_is_cheap_and_does_not_import_lava():
    result = _run_python(
        "import sys, fer2neuro\n"
        "from fer2neuro import lava_compat\n"
        "assert sum(getattr(f, lava_compat._MARKER, False) for f in sys.meta_path) == 1\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lava', 'torch')))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_finder_ignores_other_modules():
    finder = _our_finders()[0]
    assert finder.find_spec("json", None) is None
    assert finder.find_spec("lava.magma.compiler.compiler", None) is None


# ---------------------------------------------------------------------------
# The two imports that fail on Python 3.11 without the layer
# ---------------------------------------------------------------------------

@needs_lava
def test_lava_imports_in_a_fresh_interpreter():
    # One interpreter for both checks: importing netx (torch) takes seconds.
    result = _run_python(
        "import sys, fer2neuro\n"
        "import lava.proc.lif.process\n"
        "import lava.lib.dl.netx\n"
        "from fer2neuro.lava_compat import require_lava, REQUIRED_MODULES\n"
        "require_lava()\n"
        "missing = [m for m in REQUIRED_MODULES if m not in sys.modules]\n"
        "assert not missing, missing\n"
        "print('ok')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_require_lava_without_lava_is_a_one_line_fer2neuro_error():
    # `sys.modules['lava'] = None` makes `import lava...` fail exactly as if
    # lava were not installed (ModuleNotFoundError, name='lava').
    result = _run_python(
        "import sys\n"
        "sys.modules['lava'] = None\n"
        "from fer2neuro.errors import Fer2NeuroError\n"
        "from fer2neuro.lava_compat import require_lava\n"
        "try:\n"
        "    require_lava()\n"
        "except Fer2NeuroError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    assert "\n" not in message
    assert "make .venv" in message
    assert "pip install --no-deps --ignore-requires-python -r requirements/lava.txt" in message


def test_only_lava_itself_missing_counts_as_not_installed():
    # The one-line CLI handling relies on the class, not just the message.
    assert issubclass(Fer2NeuroError, Exception)
    assert lava_compat._is_lava_itself("lava")
    assert lava_compat._is_lava_itself("lava.lib.dl")
    assert not lava_compat._is_lava_itself("scipy")
    assert not lava_compat._is_lava_itself("lava.proc.lif.process2")


# ---------------------------------------------------------------------------
# var_model rewrite keeps the real file, its origin and its line numbers
# ---------------------------------------------------------------------------

def _code_lines(code):
    """(name, first line, line numbers) of `code` and every nested code
    object, in order."""
    lines = sorted({line for _, _, line in code.co_lines() if line is not None})
    out = [(code.co_name, code.co_firstlineno, lines)]
    for const in code.co_consts:
        if hasattr(const, "co_lines"):
            out.extend(_code_lines(const))
    return out


@needs_lava
def test_var_model_rewrite_keeps_file_and_line_numbers():
    import lava.magma.compiler.var_model as var_model

    path = Path(var_model.__file__)
    assert path.name == "var_model.py" and path.is_file()
    assert var_model.__spec__.origin == var_model.__file__
    assert var_model.__spec__.name == "lava.magma.compiler.var_model"

    source = path.read_text()
    rewritten = lava_compat._dataclass_rejects_dataclass_default() and bool(
        lava_compat._BYTE_ENCODER_DEFAULT.search(source)
    )
    assert isinstance(var_model.__spec__.loader,
                      lava_compat._RewritingSourceLoader) is rewritten

    # inspect finds the real lines of a rewritten class ...
    real_lines = source.splitlines()
    lines, start = inspect.getsourcelines(var_model.CoreEncoder)
    assert real_lines[start - 1:start + 1] == ["@dataclass", "class CoreEncoder:"]
    assert [line.rstrip("\n") for line in lines] == real_lines[start - 1:start - 1 + len(lines)]

    # ... and the code actually executed has exactly the line numbers of the
    # original file (the original compiles fine; it only fails when run).
    loaded = var_model.__spec__.loader.get_code(var_model.__name__)
    original = compile(source, str(path), "exec", dont_inherit=True)
    assert loaded.co_filename == str(path)
    assert _code_lines(loaded) == _code_lines(original)

    # The rewritten defaults are per-instance, as default_factory makes them.
    a, b = var_model.CoreEncoder(), var_model.CoreEncoder()
    assert a == b and a.x is not b.x
    assert isinstance(a.x, var_model.ByteEncoder)


def test_rewrite_pattern_only_touches_byte_encoder_defaults():
    src = (
        "    x: ByteEncoder = ByteEncoder()\n"
        "    payload: ty.List[ByteEncoder]\n"
        "    y: int = 0\n"
    )
    out = lava_compat._BYTE_ENCODER_DEFAULT.sub(lava_compat._BYTE_ENCODER_FACTORY, src)
    assert out.splitlines()[0] == (
        '    x: ByteEncoder = __import__("dataclasses").field(default_factory=ByteEncoder)'
    )
    assert out.splitlines()[1:] == src.splitlines()[1:]
    assert out.count("\n") == src.count("\n")


# ---------------------------------------------------------------------------
# object_detection placeholder
# ---------------------------------------------------------------------------

@needs_lava
@pytest.mark.skipif(lava_compat._torchvision_problem() is None,
                    reason="torchvision works, so the real object_detection is used")
def test_object_detection_placeholder_raises_clear_import_error():
    import lava.lib.dl.slayer as slayer
    import lava.lib.dl.netx  # noqa: F401

    obd = slayer.obd
    assert obd is sys.modules["lava.lib.dl.slayer.object_detection"]
    with pytest.raises(ImportError, match="needs torchvision, which is not installed; "
                                          "fer2neuro does not use it"):
        obd.YOLOBase  # noqa: B018
    with pytest.raises(ImportError, match="needs torchvision"):
        from lava.lib.dl.slayer.object_detection import models  # noqa: F401
    with pytest.raises(ImportError, match="needs torchvision"):
        import lava.lib.dl.slayer.object_detection.boundingbox  # noqa: F401
    # Dunder probes (inspect, pytest, pickle ...) still get AttributeError.
    assert not hasattr(obd, "__wrapped__")
    assert getattr(obd, "__file__", None) is None


# ---------------------------------------------------------------------------
# A real Lava run, checked against hand-computed LIF dynamics
# ---------------------------------------------------------------------------

STEPS = 8
# Input spikes of 2 source neurons over STEPS steps (RingBuffer: time last).
SPIKES = [[1, 0, 1, 1, 0, 1, 0, 0],
          [0, 1, 1, 0, 1, 0, 0, 1]]


def _reference_float(weights, du, dv, bias_mant, vth):
    """Lava's floating_pt LIF fed by a Dense layer.

    Dense sends, at step t, the activation it computed from the spikes of
    step t-1 (zero at t=1).  Then per neuron:
    u = u*(1-du) + a;  v = v*(1-dv) + u + bias_mant;  spike if v > vth;  v = 0."""
    n = len(weights)
    u, v = [0.0] * n, [0.0] * n
    a = [0.0] * n
    vs, ss = [], []
    for t in range(STEPS):
        s_in = [SPIKES[j][t] for j in range(len(SPIKES))]
        spikes = []
        for i in range(n):
            u[i] = u[i] * (1 - du) + a[i]
            v[i] = v[i] * (1 - dv) + u[i] + bias_mant[i]
            spikes.append(v[i] > vth)
            if spikes[-1]:
                v[i] = 0.0
        vs.append(list(v))
        ss.append(spikes)
        a = [sum(weights[i][j] for j in range(len(s_in)) if s_in[j]) for i in range(n)]
    return np.array(vs), np.array(ss), np.array(u), np.array(v)


def _decay(x, d):
    """Loihi decay: x * (4096 - d) / 2**12, truncated towards zero."""
    q = abs(x * (4096 - d)) >> 12
    return q if x >= 0 else -q


def _reference_fixed(weights, du, dv, bias_mant, bias_exp, vth):
    """Lava's bit-accurate (fixed_pt) LIF fed by a Dense layer.

    u = decay(u, du + 1) + (a << 6);  v = decay(v, dv) + u + (bias_mant << bias_exp);
    spike if v > vth << 6;  v = 0.  (du + 1: Loihi's ds_offset register.)
    The even weights are not changed by Dense's 8-bit mixed-sign truncation,
    and the values stay far from the 24-bit wrap-around and clipping."""
    n = len(weights)
    u, v, a = [0] * n, [0] * n, [0] * n
    vs, ss = [], []
    for t in range(STEPS):
        s_in = [SPIKES[j][t] for j in range(len(SPIKES))]
        spikes = []
        for i in range(n):
            u[i] = _decay(u[i], du + 1) + (a[i] << 6)
            v[i] = _decay(v[i], dv) + u[i] + (bias_mant[i] << bias_exp[i])
            assert abs(u[i]) < 2 ** 22 and abs(v[i]) < 2 ** 22
            spikes.append(v[i] > vth << 6)
            if spikes[-1]:
                v[i] = 0
        vs.append(list(v))
        ss.append(spikes)
        a = [sum(weights[i][j] for j in range(len(s_in)) if s_in[j]) for i in range(n)]
    return np.array(vs), np.array(ss), np.array(u), np.array(v)


CASES = {
    "floating_pt": dict(
        data=np.array(SPIKES, dtype=float),
        weights=[[0.5, -0.25], [0.2, 0.6]],
        lif=dict(du=0.5, dv=0.25, bias_mant=[0.1, 0.0], vth=1.0),
    ),
    "fixed_pt": dict(
        data=np.array(SPIKES, dtype=np.int32),
        weights=[[40, -20], [10, 30]],
        lif=dict(du=2048, dv=1024, bias_mant=[3, -2], bias_exp=[6, 6], vth=50),
    ),
}


@needs_lava
@pytest.mark.parametrize("tag", ["floating_pt", "fixed_pt"])
def test_ring_buffer_dense_lif_network_matches_hand_computed_dynamics(tag):
    lava_compat.require_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor

    case = CASES[tag]
    lif_kw = {k: np.array(v) if isinstance(v, list) else v for k, v in case["lif"].items()}
    source = RingBuffer(data=case["data"])
    dense = Dense(weights=np.array(case["weights"]))
    lif = LIF(shape=(2,), **lif_kw)
    source.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    v_monitor, s_monitor = Monitor(), Monitor()
    v_monitor.probe(lif.v, STEPS)
    s_monitor.probe(lif.s_out, STEPS)
    try:
        lif.run(condition=RunSteps(num_steps=STEPS), run_cfg=Loihi2SimCfg(select_tag=tag))
        v_seen = v_monitor.get_data()[lif.name]["v"]
        s_seen = s_monitor.get_data()[lif.name]["s_out"]
        u_end, v_end = lif.u.get(), lif.v.get()
    finally:
        lif.stop()

    if tag == "floating_pt":
        v_ref, s_ref, u_ref, v_end_ref = _reference_float(case["weights"], **case["lif"])
        np.testing.assert_allclose(v_seen, v_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(u_end, u_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(v_end, v_end_ref, rtol=1e-12, atol=1e-12)
    else:
        v_ref, s_ref, u_ref, v_end_ref = _reference_fixed(case["weights"], **case["lif"])
        np.testing.assert_array_equal(v_seen, v_ref)
        np.testing.assert_array_equal(u_end, u_ref)
        np.testing.assert_array_equal(v_end, v_end_ref)
    np.testing.assert_array_equal(s_seen.astype(bool), s_ref)
    # The case is only a test if both neurons spike at least once.
    assert s_ref.any(axis=0).all()


def test_lava_runs_after_the_start_method_was_fixed_elsewhere():
    """lava calls mp.set_start_method('fork') at import; once another library
    has fixed the start method (here a plain get_start_method()), that call
    would raise 'context has already been set'."""
    code = (
        "import multiprocessing as mp; mp.get_start_method()\n"
        "import fer2neuro\n"
        "import lava.magma.runtime.message_infrastructure.multiprocessing as m\n"
        "assert mp.get_start_method() == 'fork'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
