"""Portable arithmetic: the caps reach every process before NumPy and torch load, and a short smoke training under
them gives the committed bytes on this machine, whichever x86-64 CPU committed them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from chexreason_utils import arithmetic, portable_digest
from chexreason_utils.config import ConfigError, load_profile


def _clean_env() -> dict[str, str]:
    """This process's environment without any arithmetic setting: a child starts as a fresh shell would."""
    return {k: v for k, v in os.environ.items() if k not in arithmetic.PORTABLE_ENV and k != arithmetic.MODE_ENV}


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_clean_env() | env, capture_output=True,
                          text=True, timeout=300)


def test_the_committed_digests_are_reproduced_under_portable_arithmetic():
    """The check every machine runs: the smoke training's world, weights, logs and predictions, digest by digest,
    against those committed from another machine. A CPU that differs is told the first entry that diverged."""
    missing = arithmetic.missing_flags()
    if missing:
        pytest.skip(f"this CPU ({arithmetic.cpu()['model']}) lacks {', '.join(missing)}: portable arithmetic cannot run")
    made_on, expected = portable_digest.read()
    difference = portable_digest.compare(expected, portable_digest.measure("portable"))
    assert difference is None, (f"{difference} (committed from {made_on['cpu']}, {made_on['vendor']}, flags "
                                f"{made_on['flags']}; this CPU: {arithmetic.cpu()['model']}, "
                                f"{arithmetic.record()['flags']})")


def test_compare_names_the_first_entry_that_differs():
    expected = [("world/a.png", "1"), ("sft/w", "2"), ("grpo/w", "3")]
    assert portable_digest.compare(expected, list(expected)) is None
    assert portable_digest.compare(expected, [("world/a.png", "1"), ("sft/w", "x"), ("grpo/w", "y")]) == \
        "2 of 3 digests differ; the first is sft/w"
    renamed = portable_digest.compare(expected, [("world/a.png", "1"), ("sft/v", "2"), ("grpo/w", "3")])
    assert "entry 1" in renamed and "sft/w vs sft/v" in renamed


def test_digest_lists_round_trip_through_the_committed_format(tmp_path):
    digests = [("world/x.png", "ab" * 32), ("sft/w", "cd" * 32)]
    portable_digest.write(digests, {"cpu": "test CPU"}, tmp_path / "d.json")
    assert portable_digest.read(tmp_path / "d.json") == ({"cpu": "test CPU"}, digests)
    assert len((tmp_path / "d.json").read_text().splitlines()) == 2 + len(digests) + 1   # one line per entry


def test_an_unknown_cap_is_refused_by_name():
    with pytest.raises(ValueError, match="not a portable cap: MKL_CBWRX"):
        portable_digest.measure("portable", ("MKL_CBWRX",))


def test_portable_caps_reach_numpy_torch_and_workers():
    """A process that enters portable mode before loading anything runs ATen at AVX2, NumPy without its AVX-512
    loops, convolutions through ATen's own (neither oneDNN nor NNPACK, even at 16 images), one thread; a spawned
    worker inherits all of it."""
    if arithmetic.missing_flags():
        pytest.skip("portable arithmetic needs AVX2")
    done = _python("""
        import json
        from chexreason_utils import arithmetic
        arithmetic.enter("portable")
        import numpy, torch
        from chexreason_utils.seeding import seed_everything
        from chexreason_utils.jobs import run_jobs, shutdown
        seed_everything(0)
        from numpy._core._multiarray_umath import __cpu_dispatch__
        with torch.profiler.profile() as prof:   # 16 images: the batch torch would hand to NNPACK
            torch.nn.functional.conv2d(torch.ones(16, 3, 28, 28), torch.ones(8, 3, 14, 14), stride=14)
        ran = {e.key for e in prof.key_averages()}
        here = {"aten": torch.backends.cpu.get_cpu_capability(), "mkldnn": torch.backends.mkldnn.enabled,
                "threads": torch.get_num_threads(), "mode": arithmetic.in_effect(),
                "nnpack": "aten::_nnpack_spatial_convolution" in ran, "aten_conv": "aten::thnn_conv2d" in ran}
        workers = run_jobs(arithmetic.record, [{}, {}], workers=2)
        shutdown()
        print(json.dumps({"here": here, "workers": workers}))
    """, {})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["here"] == {"aten": "AVX2", "mkldnn": False, "threads": 1, "mode": "portable", "nnpack": False,
                           "aten_conv": True}
    for worker in out["workers"]:
        assert worker["mode"] == "portable" and worker["variables"] == arithmetic.PORTABLE_ENV


def test_entering_portable_after_torch_loaded_natively_is_an_error_naming_the_cause():
    done = _python("""
        import torch
        from chexreason_utils import arithmetic
        arithmetic.enter("portable")
    """, {})
    assert done.returncode != 0
    assert "arithmetic=portable must be set before numpy and torch load" in done.stderr
    assert "make lab PORTABLE=1" in done.stderr


def test_torch_loaded_before_its_cap_is_caught_at_seeding():
    """ATEN_CPU_CAPABILITY set after torch chose its kernels does nothing: ``configure_torch`` says so."""
    if "avx512f" not in arithmetic.cpu()["flags"]:
        pytest.skip("needs a CPU whose native ATen kernels are not AVX2")
    done = _python("""
        import os, torch
        torch.zeros(1).exp()
        os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
        from chexreason_utils.seeding import seed_everything
        seed_everything(0)
    """, {})
    assert "ATEN_CPU_CAPABILITY asks for AVX2 kernels, but torch runs AVX512" in done.stderr


def test_a_cpu_without_avx2_runs_natively_with_a_warning_naming_it(monkeypatch):
    monkeypatch.setenv(arithmetic.MODE_ENV, "native")   # restored after the test, like the caps below
    for key in arithmetic.PORTABLE_ENV:
        monkeypatch.setenv(key, "unset by the test")
        monkeypatch.delenv(key)
    monkeypatch.delenv(arithmetic.MODE_ENV)
    monkeypatch.setattr(arithmetic, "cpu", lambda: {"model": "Old CPU 2009", "vendor": "X", "machine": "x86_64",
                                                    "flags": ["sse2", "avx"]})
    with pytest.warns(RuntimeWarning, match=r"needs avx2, fma.*this CPU \(Old CPU 2009\) lacks.*differ from the "
                                            r"committed figures"):
        assert arithmetic.enter("portable") == arithmetic.UNAVAILABLE
    assert os.environ[arithmetic.MODE_ENV] == arithmetic.UNAVAILABLE
    assert not any(k in os.environ for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR"))
    assert arithmetic.differs_from_committed(arithmetic.in_effect())


def test_another_architecture_lacks_everything():
    assert arithmetic.missing_flags({"model": "Graviton", "machine": "aarch64", "flags": []}) == \
        ["x86-64 (this is aarch64)"]


def test_the_mode_is_a_profile_option_with_allowed_values():
    assert load_profile("tiny").arithmetic == "native"
    assert load_profile("tiny", {"arithmetic": "portable"}).arithmetic == "portable"
    with pytest.raises(ConfigError, match="arithmetic"):
        load_profile("tiny", {"arithmetic": "fast"})


def test_the_run_command_restarts_itself_under_the_profiles_mode_and_says_so(tmp_path):
    """``chexreason run`` loads the profile (and NumPy with it) before it knows the mode: it starts itself afresh
    under the caps, and its first line says which float path the run takes."""
    if arithmetic.missing_flags():
        pytest.skip("portable arithmetic needs AVX2")
    command = [sys.executable, "-m", "chexreason_utils", "run", "--profile", "smoke", "--only", "99",
               "--run-dir", str(tmp_path / "run"), "--figure-dir", str(tmp_path / "figures")]
    portable = subprocess.run([*command, "-p", "arithmetic=portable"], env=_clean_env(), capture_output=True, text=True)
    native = subprocess.run(command, env=_clean_env(), capture_output=True, text=True)
    assert portable.stdout.startswith("arithmetic: portable arithmetic on ")
    assert "will differ" not in portable.stdout and "no stage '99'" in portable.stderr
    assert native.stdout.startswith("arithmetic: native arithmetic on ")
    assert "will differ from a portable run's and from the committed figures" in native.stdout
