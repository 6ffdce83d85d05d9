import numpy as np
import pytest
import soundfile as sf
import torch

from mtldm_cli.audio import MelFrontEnd, read_audio, save_audio_files, to_mono_tensor
from mtldm_cli.config import AudioConfig
from mtldm_cli.errors import AudioError, OutputError


def test_read_audio_downmixes_any_format(tmp_path):
    stereo = np.stack([np.full(800, 0.5), np.full(800, -0.1)], axis=1).astype(np.float32)
    sf.write(tmp_path / "a.flac", stereo, 8000, subtype="PCM_24")
    wav, sr = read_audio(tmp_path / "a.flac")
    assert sr == 8000 and wav.shape == (800,) and wav.dtype == np.float32
    np.testing.assert_allclose(wav, 0.2, atol=1e-5)


def test_resampling_to_model_rate(tmp_path):
    t = np.arange(44100) / 44100
    sf.write(tmp_path / "a.wav", np.sin(2 * np.pi * 440 * t).astype(np.float32), 44100, subtype="FLOAT")
    wav = to_mono_tensor(tmp_path / "a.wav", None, 16000, "a")
    assert wav.shape == (16000,)
    spectrum = torch.fft.rfft(wav).abs()
    assert int(spectrum.argmax()) == 440  # 1 s at 16 kHz: bin k is k Hz


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "not a readable audio file"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "no audio samples"),
        (lambda p: sf.write(p, np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT"), "nan"),
        (lambda p: sf.write(p, np.array([0.1, np.inf], np.float32), 16000, subtype="FLOAT"), "infinite"),
    ],
    ids=["missing", "directory", "corrupt", "empty", "nan", "inf"],
)
def test_read_audio_rejects_bad_files(tmp_path, make, needle):
    path = tmp_path / "x.wav"
    make(path)
    with pytest.raises(AudioError) as e:
        read_audio(path)
    assert needle in str(e.value).lower() and str(path) in str(e.value)


def test_array_input_is_checked():
    with pytest.raises(AudioError, match="NaN"):
        to_mono_tensor(np.array([0.0, np.nan]), 16000, 16000, "given stem 'bass'")
    with pytest.raises(AudioError, match="no audio"):
        to_mono_tensor(np.zeros(0), 16000, 16000, "x")


def test_mel_front_end_matches_musicldm_framing():
    cfg = AudioConfig()
    mel = MelFrontEnd(cfg)
    wav = torch.randn(2, 163840) * 0.1
    out = mel(wav, 1024)
    assert out.shape == (2, 1024, 64)
    # silence hits the log clamp exactly
    silent = mel(torch.zeros(1, 16000), 100)
    assert torch.allclose(silent, torch.log(torch.tensor(1e-5)))
    # a 1 kHz tone lands in the mel bin whose slaney centre is nearest to 1 kHz
    t = torch.arange(16000) / 16000
    tone = mel(torch.sin(2 * torch.pi * 1000 * t), 100)[50]
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(513, 0, 8000, 64, 16000, norm="slaney", mel_scale="slaney")
    assert int(tone.argmax()) == int(fb[64].argmax())  # FFT bin 64 = 1000 Hz


def test_save_is_all_or_nothing_on_interrupt(tmp_path, monkeypatch):
    calls = []
    real_write = sf.write

    def flaky(*args, **kw):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(*args, **kw)

    monkeypatch.setattr(sf, "write", flaky)
    files = {tmp_path / "out" / f"{n}.wav": np.zeros(100, np.float32) for n in ("a", "b", "c")}
    with pytest.raises(KeyboardInterrupt):
        save_audio_files(files, 16000)
    assert not (tmp_path / "out").exists()  # nothing half-written, not even the folder it made


def test_save_refuses_existing_without_force(tmp_path):
    target = tmp_path / "a.wav"
    target.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists"):
        save_audio_files({target: np.zeros(10, np.float32)}, 16000)
    assert target.read_bytes() == b"keep me"
    save_audio_files({target: np.zeros(10, np.float32)}, 16000, force=True)
    assert sf.info(target).frames == 10


def test_save_clips_pcm_but_not_float(tmp_path):
    loud = np.array([2.0, -3.0, 0.5], np.float32)
    save_audio_files({tmp_path / "p.wav": loud, }, 16000)
    save_audio_files({tmp_path / "f.wav": loud}, 16000, subtype="float")
    assert np.abs(sf.read(tmp_path / "p.wav")[0]).max() <= 1.0
    np.testing.assert_array_equal(sf.read(tmp_path / "f.wav", dtype="float32")[0], loud)
    assert sf.info(tmp_path / "f.wav").subtype == "FLOAT"


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        save_audio_files({blocker / "sub" / "a.wav": np.zeros(10, np.float32)}, 16000)
