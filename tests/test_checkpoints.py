import hashlib
import shutil

import pytest

from mtldm_cli import MultiTrackPipeline
from mtldm_cli.checkpoints import load_registry
from mtldm_cli.errors import ModelError
from mtldm_cli.sources import is_cached, resolve_model
from mtldm_cli.tiny import BUILDERS

from .conftest import AUDIO, REV, archive_model, fake_hub_cache, register_entry, register_registry


def test_registry_entries_are_valid():
    reg = load_registry()
    assert {"tiny-random", "tiny-random-uncond"} <= set(reg)
    for e in reg.values():
        assert e.description and e.audio.stems


def test_tiny_build_is_deterministic(tmp_path):
    a, b = BUILDERS["tiny-random"](tmp_path / "a"), BUILDERS["tiny-random"](tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_local_folder_loads_through_the_same_loader(tiny_dir, tmp_path):
    copy = shutil.copytree(tiny_dir, tmp_path / "my-model")
    pipe = MultiTrackPipeline.from_pretrained(str(copy), device="cpu")
    assert pipe.source.source.startswith("local:") and pipe.stems == ("bass", "drums", "guitar", "piano")


def test_unknown_and_missing_models():
    with pytest.raises(ModelError, match="unknown model 'nope'.*tiny-random"):
        resolve_model("nope")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("./no/such/folder")


def test_folder_without_pipeline_json(tmp_path):
    with pytest.raises(ModelError, match="not an mtldm model folder"):
        resolve_model(str(tmp_path))


def test_corrupt_model_folder(tiny_dir, tmp_path):
    copy = shutil.copytree(tiny_dir, tmp_path / "broken")
    (copy / "unet" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="cannot load the model"):
        MultiTrackPipeline.from_pretrained(str(copy))


def test_hub_entry_resolves_from_the_hub_cache_offline(tiny_dir, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    fake_hub_cache(cache, "someone/tiny", tiny_dir)
    digest = hashlib.sha256((tiny_dir / "unet" / "model.safetensors").read_bytes()).hexdigest()
    register_entry(tmp_path, monkeypatch, "hubtiny",
           f'hf = "someone/tiny", revision = "{REV}", sha256 = {{ "unet/model.safetensors" = "{digest}" }}')
    monkeypatch.setenv("MTLDM_OFFLINE", "1")
    pipe = MultiTrackPipeline.from_pretrained("hubtiny", cache_dir=cache, device="cpu")
    assert pipe.source.revision == REV and "someone/tiny" in pipe.source.source
    assert is_cached(load_registry()["hubtiny"], cache_dir=cache)
    # a bare repo id works too, through refs/main
    assert resolve_model("someone/tiny", cache_dir=cache).path.name == REV


def test_hub_sha256_mismatch_is_refused(tiny_dir, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    fake_hub_cache(cache, "someone/tiny", tiny_dir)
    register_entry(tmp_path, monkeypatch, "hubtiny",
           f'hf = "someone/tiny", revision = "{REV}", sha256 = {{ "unet/model.safetensors" = "{"0" * 64}" }}')
    with pytest.raises(ModelError, match="sha256 mismatch"):
        resolve_model("hubtiny", cache_dir=cache, offline=True)


def test_offline_with_empty_cache_and_unreachable_hub(tmp_path):
    with pytest.raises(ModelError, match="not in the cache and offline mode is on"):
        resolve_model("someone/absent", cache_dir=tmp_path, offline=True)
    with pytest.raises(ModelError, match="cannot reach the hub"):  # HF_ENDPOINT is a closed local port
        resolve_model("someone/absent", cache_dir=tmp_path, offline=False)


def test_url_entry_downloads_verifies_and_caches(tiny_dir, tmp_path, monkeypatch):
    digest = archive_model(tiny_dir, tmp_path / "model.tar.gz")
    register_entry(tmp_path, monkeypatch, "urltiny", f'url = "{(tmp_path / "model.tar.gz").as_uri()}", sha256 = "{digest}"')
    cache = tmp_path / "c"
    entry = load_registry()["urltiny"]
    assert not is_cached(entry, cache)
    path = resolve_model("urltiny", cache_dir=cache).path
    assert (path / "pipeline.json").is_file() and is_cached(entry, cache)
    (tmp_path / "model.tar.gz").unlink()  # cached now: works offline without the source
    assert resolve_model("urltiny", cache_dir=cache, offline=True).path == path


def test_url_hash_mismatch_is_refused_and_not_kept(tiny_dir, tmp_path, monkeypatch):
    archive_model(tiny_dir, tmp_path / "model.tar.gz")
    register_entry(tmp_path, monkeypatch, "bad", f'url = "{(tmp_path / "model.tar.gz").as_uri()}", sha256 = "{"ab" * 32}"')
    cache = tmp_path / "c"
    with pytest.raises(ModelError, match="sha256 mismatch"):
        resolve_model("bad", cache_dir=cache)
    assert not list((cache / "downloads").rglob("*.tar.gz"))
    assert not (cache / "models").exists()


def test_registry_audio_must_match_the_model(tiny_dir, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    fake_hub_cache(cache, "someone/tiny", tiny_dir)
    register_entry(tmp_path, monkeypatch, "wrong", f'hf = "someone/tiny", revision = "{REV}"',
           audio='sample_rate = 44100, segment_seconds = 10.24, stems = ["bass", "drums", "guitar", "piano"]')
    with pytest.raises(ModelError, match="does not match its registry entry"):
        resolve_model("wrong", cache_dir=cache, offline=True)


@pytest.mark.parametrize("body, needle", [
    ("[models.x]\ndescription='x'\nformat='mtldm'\nsource={hf='a/b'}\n" + AUDIO, "pin a revision"),
    ("[models.x]\ndescription='x'\nformat='mtldm'\nsource={url='file:///x'}\n" + AUDIO, "sha256"),
    ("[models.x\n", "not valid TOML"),
])
def test_invalid_registry_entries(tmp_path, monkeypatch, body, needle):
    register_registry(tmp_path, monkeypatch, body)
    with pytest.raises(ModelError, match=needle):
        load_registry()


def test_the_packaged_demo_resolves_offline_and_is_verified(tmp_path):
    """The demo ships inside the package: no network, no cache, every file checked by sha256."""
    entry = load_registry()["demo"]
    assert entry.source.kind == "package" and is_cached(entry)
    model = resolve_model("demo", offline=True, cache_dir=tmp_path / "empty")
    shipped = {p.relative_to(model.path).as_posix() for p in model.path.rglob("*") if p.is_file()}
    assert set(entry.source.sha256) == shipped  # nothing shipped unchecked
    size = sum((model.path / rel).stat().st_size for rel in entry.source.sha256)
    assert size <= 30e6  # the budget for the embedded weights


def test_packaged_file_with_a_wrong_digest_is_refused(tmp_path, monkeypatch):
    entry = load_registry()["demo"]
    digests = dict(entry.source.sha256)
    rel = next(iter(digests))
    digests[rel] = "0" * 64
    table = ", ".join(f'"{k}" = "{v}"' for k, v in digests.items())
    register_entry(tmp_path, monkeypatch, "demo-bad", f'package = "demo", sha256 = {{ {table} }}')
    with pytest.raises(ModelError, match="sha256 mismatch"):
        resolve_model("demo-bad")
    register_registry(tmp_path, monkeypatch, "[models.x]\ndescription='x'\nformat='mtldm'\nsource={package='demo'}\n" + AUDIO)
    with pytest.raises(ModelError, match="lists the sha256 of each"):
        load_registry()


def test_weights_stored_in_float16_load_and_compute_in_float32(tiny_dir, tmp_path):
    """store_half (scripts/embed_model.py --half) halves a model folder's weights; the loader computes
    in float32 again, and the music moves no more than float16's rounding of the weights allows."""
    import shutil

    import numpy as np
    import torch

    from mtldm_cli import MultiTrackPipeline
    from mtldm_cli.checkpoints import store_half

    folder = tmp_path / "half"
    shutil.copytree(tiny_dir, folder)
    weights = sorted(folder.rglob("*.safetensors"))
    before = sum(p.stat().st_size for p in weights)
    saved = store_half(folder)
    assert saved == before - sum(p.stat().st_size for p in weights) and saved > 0.45 * before
    full = MultiTrackPipeline.from_pretrained(str(tiny_dir), device="cpu")
    half = MultiTrackPipeline.from_pretrained(str(folder), device="cpu")
    modules = [half.unet, half.codec.vae, half.conditioner.clap, half.codec.vocoder]
    assert {p.dtype for m in modules for p in m.parameters()} == {torch.float32}
    a = np.stack(list(full.generate(prompt="a song", duration=0.64, seed=0).stems.values()))
    b = np.stack(list(half.generate(prompt="a song", duration=0.64, seed=0).stems.values()))
    other = np.stack(list(full.generate(prompt="a song", duration=0.64, seed=1).stems.values()))
    assert not np.array_equal(a, b)  # the weights did change
    assert np.abs(a - b).mean() < 0.05 * np.abs(a - other).mean()  # far less than another seed moves it
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    from safetensors.torch import load_file, save_file

    unet = bad / "unet" / "model.safetensors"
    tensors = load_file(str(unet))
    first = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[first] = tensors[first] * 0 + 1e5
    save_file(tensors, str(unet))
    digests = {p: p.read_bytes() for p in bad.rglob("*.safetensors")}
    with pytest.raises(ValueError, match="float16's range"):
        store_half(bad)
    assert all(p.read_bytes() == data for p, data in digests.items())  # nothing half-written
