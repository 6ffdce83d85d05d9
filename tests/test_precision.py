"""Precision (``torch_dtype`` / ``--dtype``) and compilation (``compile`` / ``--compile``) on the tiny
test model: what they change, what they must not, and how close the result stays to float32."""

import json
import shutil

import numpy as np
import pytest
import torch

from mtldm_cli import MultiTrackPipeline
from mtldm_cli.errors import InputError

# the largest relative L2 distance from the float32 stems that each precision may give (tiny-random,
# 4 steps; docs/performance.md states the same tolerances for the full-size model)
TOLERANCE = {"bf16": 0.05, "fp16": 0.01}


def stems_of(out, pipe) -> np.ndarray:
    return np.stack([out.stems[s] for s in pipe.stems])


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.fixture(scope="module")
def reference(pipe):
    return stems_of(pipe.generate(prompt="funk", duration=1.0, seed=3, steps=4), pipe)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_casts_the_unet_and_vae_and_stays_close_to_float32(dtype, reference):
    half = MultiTrackPipeline.from_pretrained("tiny-random", device="cpu", torch_dtype=dtype)
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert half.dtype == want and next(half.unet.parameters()).dtype == want and half.codec.vae.dtype == want
    assert next(half.conditioner.clap.parameters()).dtype == torch.float32  # CLAP runs once a call: kept
    out = half.generate(prompt="funk", duration=1.0, seed=3, steps=4)
    got = stems_of(out, half)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert 0 < relative(reference, got) < TOLERANCE[dtype]  # not float32 in disguise, not broken
    assert out.info["dtype"] == str(want).removeprefix("torch.")
    # every task runs in it: the sampler state stays float32 around the half-precision model
    mix = got.sum(0)
    assert set(half.separate(mix, steps=2, resamples=1, seed=0).stems) == set(half.stems)
    assert set(half.arrange({"bass": got[0]}, steps=2, seed=1).stems) == set(half.stems)


def test_to_casts_back_and_forth(pipe, reference):
    p = MultiTrackPipeline.from_pretrained("tiny-random", device="cpu")
    p.to(dtype=torch.bfloat16).to(dtype="fp32")
    assert next(p.unet.parameters()).dtype == torch.float32 and p.device == torch.device("cpu")
    assert relative(reference, stems_of(p.generate(prompt="funk", duration=1.0, seed=3, steps=4), p)) < TOLERANCE["bf16"]


@pytest.mark.parametrize("bad", ["fp8", "int8", torch.int64])
def test_an_unknown_precision_is_refused_naming_the_parameter(bad):
    with pytest.raises(InputError, match="torch_dtype"):
        MultiTrackPipeline.from_pretrained("tiny-random", device="cpu", torch_dtype=bad)


def test_compile_keeps_the_result(reference):
    """``compile`` goes through torch.compile; the eager backend checks the wiring in seconds (the
    inductor backend, the default, is the slow test below)."""
    p = MultiTrackPipeline.from_pretrained("tiny-random", device="cpu").compile(backend="eager")
    out = p.generate(prompt="funk", duration=1.0, seed=3, steps=4)
    assert out.info["compiled"] is True
    assert relative(reference, stems_of(out, p)) < 1e-5


def test_the_cli_records_the_precision(cli, tmp_path):
    r = cli("generate", "--model", "tiny-random", "--out", tmp_path / "g", "--steps", "2", "--duration", "0.5",
            "--dtype", "bf16", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    run = json.loads((tmp_path / "g" / "run.json").read_text())
    assert run["dtype"] == "bfloat16" and run["compiled"] is False
    r = cli("generate", "--model", "tiny-random", "--out", tmp_path / "f", "--steps", "1", "--duration", "0.5",
            "--dtype", "fp16", "--device", "cpu")
    assert r.exit_code == 0 and "fp16 on a CPU" in r.stderr  # slow there: said, not refused
    r = cli("generate", "--model", "tiny-random", "--out", tmp_path / "h", "--dtype", "fp8")
    assert r.exit_code == 2 and "--dtype" in r.stderr


@pytest.mark.slow  # inductor compiles C++ kernels: a minute or more on 2 cores
@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="inductor needs a C++ compiler on the CPU")
def test_the_cli_compiles_with_inductor(cli, tmp_path):
    r = cli("generate", "--model", "tiny-random", "--out", tmp_path / "g", "--steps", "2", "--duration", "0.5",
            "--compile", "--device", "cpu", "--seed", "1", "--float")
    assert r.exit_code == 0, r.stderr
    r2 = cli("generate", "--model", "tiny-random", "--out", tmp_path / "e", "--steps", "2", "--duration", "0.5",
             "--device", "cpu", "--seed", "1", "--float")
    assert r2.exit_code == 0
    import soundfile as sf

    a, b = sf.read(tmp_path / "e" / "mix.wav")[0], sf.read(tmp_path / "g" / "mix.wav")[0]
    assert json.loads((tmp_path / "g" / "run.json").read_text())["compiled"] is True
    assert relative(a, b) < 1e-4
