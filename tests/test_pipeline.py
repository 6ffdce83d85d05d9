import itertools

import numpy as np
import pytest
import soundfile as sf

from mtldm_cli.errors import InputError, StemError

from .conftest import STEMS, synth_stems

SUBSETS = [set(c) for r in (1, 2, 3) for c in itertools.combinations(STEMS, r)]


def test_generate_is_reproducible_per_seed(pipe):
    a = pipe.generate(duration=0.5, steps=2, seed=7)
    b = pipe.generate(duration=0.5, steps=2, seed=7)
    c = pipe.generate(duration=0.5, steps=2, seed=8)
    assert list(a.stems) == list(STEMS) and all(w.shape == (8000,) for w in a.stems.values())
    assert all(np.array_equal(a.stems[s], b.stems[s]) for s in STEMS)
    assert not np.array_equal(a.stems["bass"], c.stems["bass"])
    np.testing.assert_allclose(a.mix, sum(a.stems.values()), atol=1e-6)
    assert a.info["options"]["seed"] == 7 and a.info["options"]["steps"] == 2


def test_text_prompt_changes_the_result(pipe):
    a = pipe.generate("funky bass", duration=0.5, steps=2, seed=1, guidance=3.0)
    b = pipe.generate("calm piano", duration=0.5, steps=2, seed=1, guidance=3.0)
    assert not np.array_equal(a.stems["piano"], b.stems["piano"])


def test_text_embedding_is_normalised(pipe):
    e = pipe.conditioner.text(["rock", ""])
    assert e.shape == (2, 32) and np.allclose(e.norm(dim=-1).numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize("given", SUBSETS, ids=lambda g: "+".join(sorted(g)))
def test_arrange_every_subset_keeps_given_stems_exact(pipe, given):
    stems = synth_stems(seconds=0.5)
    out = pipe.arrange({s: stems[s].astype(np.float32) for s in given}, steps=2, seed=0)
    want = [s for s in STEMS if s not in given]
    assert list(out.stems) == list(STEMS)
    assert out.info["given"] == [s for s in STEMS if s in given] and out.info["want"] == want
    for s in given:
        np.testing.assert_array_equal(out.stems[s], stems[s].astype(np.float32))
    assert out.info["condition"] == "given-mix"


def test_arrange_only_some_wanted_and_prompt(pipe):
    stems = synth_stems(seconds=0.5)
    out = pipe.arrange({"bass": stems["bass"]}, ["piano"], prompt="jazz", steps=2, seed=0)
    assert list(out.stems) == ["bass", "piano"] and out.info["condition"] == "text"


def test_arrange_from_files_at_another_rate_comes_back_at_that_rate(pipe, tmp_path):
    stems = synth_stems(seconds=0.5)
    sf.write(tmp_path / "bass.wav", stems["bass"], 16000, subtype="FLOAT")
    out = pipe.arrange({"bass": tmp_path / "bass.wav"}, steps=2, seed=0)
    np.testing.assert_array_equal(out.stems["bass"], stems["bass"].astype(np.float32))
    drums = stems["drums"][::2].astype(np.float32)
    sf.write(tmp_path / "drums.wav", drums, 8000, subtype="FLOAT")  # resampled for the model only
    out = pipe.arrange({"drums": tmp_path / "drums.wav"}, steps=2, seed=0)
    assert out.sample_rate == 8000 and {w.shape for w in out.stems.values()} == {(4000,)}
    np.testing.assert_array_equal(out.stems["drums"], drums)
    out = pipe.arrange({"drums": tmp_path / "drums.wav"}, steps=2, seed=0, output_rate=16000)
    assert out.sample_rate == 16000 and {w.shape for w in out.stems.values()} == {(8000,)}


@pytest.mark.parametrize("given, want, err", [
    ({"flute": 1}, None, "unknown stem 'flute'"),
    ({"bass": 1}, ["kazoo"], "unknown stem 'kazoo'"),
    ({"bass": 1}, ["bass"], "both given and wanted"),
    ({s: 1 for s in STEMS}, None, "nothing left to generate"),
    ({}, None, "no stem given"),
])
def test_arrange_rejects_bad_stem_sets(pipe, given, want, err):
    with pytest.raises(StemError, match=err):
        pipe.arrange({k: np.ones(100) * 0.1 for k in given}, want)


def test_arrange_rejects_stems_of_different_lengths(pipe):
    with pytest.raises(InputError, match="differ in length"):
        pipe.arrange({"bass": np.ones(16000) * 0.1, "drums": np.ones(8000) * 0.1})


def test_arrange_warns_on_a_silent_given_stem(pipe):
    out = pipe.arrange({"bass": np.zeros(8000), "drums": synth_stems(0.5)["drums"]}, steps=1, seed=0)
    assert out.info["warnings"] == ["given stem 'bass' is silent"]


def test_condition_on_a_reference(pipe):
    ref = synth_stems(seconds=1.0)
    out = pipe.condition(sum(ref.values()), duration=0.5, steps=2, seed=0)
    assert list(out.stems) == list(STEMS) and out.info["task"] == "condition"
    with pytest.raises(InputError, match="is silent"):
        pipe.condition(np.zeros(16000))


def test_unconditional_model_refuses_prompts_and_references(uncond_pipe):
    out = uncond_pipe.generate(duration=0.5, steps=2, seed=0)
    assert len(out.stems) == 4
    with pytest.raises(InputError, match="unconditional"):
        uncond_pipe.generate("rock", duration=0.5, steps=1)
    with pytest.raises(InputError, match="unconditional"):
        uncond_pipe.condition(np.ones(1000) * 0.1)
    arranged = uncond_pipe.arrange({"bass": synth_stems(0.5)["bass"]}, steps=1, seed=0)
    assert arranged.info["condition"] == "none"


@pytest.mark.parametrize("method", ["dirac", "gaussian", "consistency"])
def test_separate(pipe, method):
    mix = sum(synth_stems(seconds=1.0).values())
    out = pipe.separate(mix, method=method, steps=3, seed=0)
    assert list(out.stems) == list(STEMS) and all(w.shape == (16000,) for w in out.stems.values())
    assert out.info["options"]["method"] == method
    again = pipe.separate(mix, method=method, steps=3, seed=0)
    assert np.array_equal(out.stems["piano"], again.stems["piano"])
    assert out.info["options"]["wiener"] and np.allclose(out.mix, mix, atol=1e-4)  # by default: sums back to the mixture
    raw = pipe.separate(mix, method=method, steps=3, seed=0, wiener=False)
    assert not raw.info["options"]["wiener"] and not np.allclose(raw.mix, mix, atol=1e-2)


def test_long_mixtures_are_separated_in_crossfaded_chunks(pipe):
    mix = sum(synth_stems(seconds=20.0).values())
    chunks = pipe.codec.sample_windows(len(mix))
    seg = pipe.codec.segment_samples
    assert len(chunks) == 3 and chunks[0].start == 0 and chunks[-1].stop == len(mix)
    assert chunks[1].start - chunks[0].start == seg - round(2.56 * 16000) and chunks[0].after == round(2.56 * 16000)
    for chunk_batch, groups in ((1, 3), (2, 2), (4, 1)):  # chunks go through the model chunk_batch at a time
        ticks = []
        out = pipe.separate(mix, steps=1, resamples=1, seed=0, wiener=True, callback=ticks.append, chunk_batch=chunk_batch)
        steps = [t for t in ticks if "i" in t]
        assert out.info["chunks"] == 3 and out.info["options"]["chunk_batch"] == chunk_batch
        assert [t["i"] for t in steps] == list(range(groups)) and {t["total"] for t in steps} == {groups}
        assert [t.get("stage") for t in ticks] == [None, "decoding"] * groups  # each group's decoding is said
        assert all(w.shape == (len(mix),) and np.isfinite(w).all() for w in out.stems.values())
        assert np.allclose(out.mix, mix, atol=1e-4)


def test_separate_rejects_silence_and_bad_settings(pipe):
    with pytest.raises(InputError, match="is silent"):
        pipe.separate(np.zeros(16000))
    with pytest.raises(InputError, match="method='magic'"):
        pipe.separate(np.ones(1000) * 0.1, method="magic")
    with pytest.raises(InputError, match="sigma_min=2.0 and sigma_max=1.0: the smallest"):
        pipe.separate(np.ones(1000) * 0.1, sigma_min=2.0, sigma_max=1.0)


def test_output_save_layout(pipe, tmp_path):
    out = pipe.generate(duration=0.25, steps=1, seed=0)
    files = out.save(tmp_path / "o")
    assert sorted(f.name for f in files) == sorted([*(f"{s}.wav" for s in STEMS), "mix.wav", "run.json"])
    import json

    info = json.loads((tmp_path / "o" / "run.json").read_text())
    assert info["options"]["seed"] == 0 and info["model"] == "tiny-random" and info["sample_rate"] == 16000
    assert sf.info(tmp_path / "o" / "bass.wav").subtype == "PCM_16"


def test_bad_duration_and_device(pipe):
    with pytest.raises(InputError, match="duration=-1: must be a positive"):
        pipe.generate(duration=-1)
    import torch

    from mtldm_cli.pipeline import resolve_device

    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="device='cuda': CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize("task, kwargs, needle", [
    ("generate", {"steps": 0}, "steps=0"), ("separate", {"steps": 0}, "steps=0"),
    ("generate", {"steps": -3}, "steps=-3"), ("separate", {"resamples": 0}, "resamples=0"),
    ("generate", {"eta": 2.0}, "eta=2.0"), ("generate", {"guidance": float("inf")}, "guidance=inf"),
    ("generate", {"seed": 2**63}, f"seed={2**63}"), ("generate", {"preset": "slow"}, "preset='slow'"),
    ("generate", {"sampler": "euler"}, "sampler='euler'"), ("separate", {"gamma": 0.0}, "gamma=0.0"),
])
def test_bad_options_are_refused_naming_the_python_parameter(pipe, task, kwargs, needle):
    args = () if task == "generate" else (np.ones(1000) * 0.1,)
    with pytest.raises(InputError) as e:
        getattr(pipe, task)(*args, duration=0.25, **kwargs) if task == "generate" else pipe.separate(*args, **kwargs)
    assert needle in str(e.value) and "--" not in str(e.value)


def test_generate_keeps_only_the_stems_asked_for(pipe):
    out = pipe.generate(duration=0.25, steps=1, seed=0, stems=["piano", "bass"])
    assert list(out.stems) == ["bass", "piano"] and out.info["stems"] == ["bass", "piano"]
    with pytest.raises(StemError, match="stems: unknown stem 'flute'"):
        pipe.generate(duration=0.25, stems=["flute"])


def test_arrange_takes_files_named_by_stem(pipe, tmp_path):
    stems = synth_stems(seconds=0.5)
    for name, stem in (("Bass_take2.wav", "bass"), ("d.wav", "drums")):
        sf.write(tmp_path / name, stems[stem], 16000, subtype="FLOAT")
    out = pipe.arrange([tmp_path / "Bass_take2.wav", tmp_path / "d.wav"], ["piano"], steps=1, seed=0)
    assert out.info["given"] == ["bass", "drums"] and list(out.stems) == ["bass", "drums", "piano"]
    np.testing.assert_array_equal(out.stems["drums"], stems["drums"].astype(np.float32))
    with pytest.raises(StemError, match="cannot tell which stem"):
        pipe.arrange([tmp_path / "d.wav", tmp_path / "Bass_take2.wav", tmp_path / "mix.wav"])
    with pytest.raises(StemError, match="given twice"):
        pipe.arrange([tmp_path / "d.wav", ("drums", stems["drums"])])


def test_options_are_recorded_as_resolved(pipe):
    out = pipe.generate(duration=0.25, preset="paper", steps=2, seed=3)
    assert out.info["options"] == {"sampler": "ddim", "steps": 2, "eta": 1.0, "guidance": 2.0, "seed": 3,
                                   "preset": "paper", "resample": 1, "reconstruction": 0.0, "given_guidance": 1.0}
    arranged = pipe.arrange({"bass": synth_stems(0.25)["bass"]}, steps=1, seed=0)
    assert arranged.info["options"]["guidance"] == pipe.config.sampling.arrange_guidance
    opts = pipe.sampling_options(steps=4, seed=9)
    assert pipe.generate(duration=0.25, options=opts).info["options"] == opts.record()

