"""Tiny random-weight models, built deterministically and saved in the real on-disk layout.

They run every code path a real model does (VAE, UNet, vocoder, CLAP, scheduler) in seconds on a CPU,
so tests and smoke runs never need a download. They make noise, not music.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .config import AudioConfig, Conditioning, PipelineConfig, SamplingDefaults

if TYPE_CHECKING:
    import torch

BUILD_VERSION = 2  # 2: UNet module names follow the official state dict
SEED = 0
CLAP_DIM = 32


def perturb_zero_init(module: torch.nn.Module, std: float = 0.02) -> None:
    """Zero-initialised output layers would make a random model's output identically zero."""
    import torch

    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)


def byte_level_vocab(folder: Path) -> tuple[Path, Path]:
    """A RoBERTa-style byte-level vocabulary with no merges: works offline, tokenises any text."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in chars:
        vocab[ch] = len(vocab)
    vocab["<mask>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder / "vocab.json", folder / "merges.txt"


def tiny_clap(folder: Path, audio: PipelineConfig) -> None:
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, ClapTextConfig, RobertaTokenizer

    audio_cfg = ClapAudioConfig(
        num_mel_bins=16, window_size=4, spec_size=64, patch_size=2, patch_stride=2, hidden_size=16,
        patch_embeds_hidden_size=8, projection_dim=CLAP_DIM, depths=[1, 1], num_attention_heads=[2, 2],
        num_hidden_layers=2,
    )
    text_cfg = ClapTextConfig(
        vocab_size=262, hidden_size=16, projection_dim=CLAP_DIM, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=130,
    )
    cfg = ClapConfig(text_config=text_cfg.to_dict(), audio_config=audio_cfg.to_dict(), projection_dim=CLAP_DIM)
    model = ClapModel(cfg).eval()
    vocab, merges = byte_level_vocab(folder / "_vocab")
    processor = ClapProcessor(
        feature_extractor=ClapFeatureExtractor(
            feature_size=16, sampling_rate=audio.clap_sample_rate, hop_length=480,
            max_length_s=int(audio.clap_max_seconds), truncation="rand_trunc", padding="repeatpad",
        ),
        tokenizer=RobertaTokenizer(str(vocab), str(merges), model_max_length=128),
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for p in (vocab, merges):
        p.unlink()
    (folder / "_vocab").rmdir()


def build(folder: Path, *, name: str, conditioning: Conditioning) -> Path:
    """Write a tiny model to ``folder`` (same seed, same bytes, every time)."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    from .components import quiet_libraries
    from .model import MultiTrackUNet, UNetConfig
    from .samplers import training_scheduler

    quiet_libraries()
    folder = Path(folder)
    audio = AudioConfig()
    cfg = PipelineConfig(
        name=name, conditioning=conditioning, clap_max_seconds=2.0,
        description="tiny random weights: for tests and smoke runs; makes noise, not music",
        sampling=SamplingDefaults(steps=10, separate_steps=10),
    )
    torch.manual_seed(SEED)
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(8, 16, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=4, sample_size=audio.segment_frames, mid_block_add_attention=False,
    ).eval()  # type: ignore[attr-defined]  # diffusers' lazy exports hide that its models are nn.Modules
    unet = MultiTrackUNet(UNetConfig(
        stems=len(audio.stems), latent_channels=8, model_channels=16, channel_mult=(1, 2, 2),
        num_res_blocks=1, attention_resolutions=(4,), num_head_channels=16,
        cond_dim=CLAP_DIM if conditioning == "clap" else None, norm_groups=8,
    )).eval()
    perturb_zero_init(unet)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=audio.n_mels, sampling_rate=audio.sample_rate, upsample_initial_channel=32,
        upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[11, 8, 4, 4, 4], resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]], normalize_before=False,
        initializer_range=0.16,  # audible output from random weights (0.01 gives ~1e-11)
    )).eval()
    vae.register_to_config(scaling_factor=_scale_by_std(vae, audio))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.json").write_text(cfg.model_dump_json(indent=2))
    vae.save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    vocoder.save_pretrained(folder / "vocoder")
    training_scheduler().save_pretrained(folder / "scheduler")
    if conditioning == "clap":
        tiny_clap(folder / "clap", cfg)
    return folder


def _scale_by_std(vae, audio: AudioConfig) -> float:
    """LDM's scale_by_std: 1/std of latents, here of a fixed chord-plus-noise signal."""
    import torch

    from .audio import MelFrontEnd

    g = torch.Generator().manual_seed(SEED)
    t = torch.arange(audio.sample_rate * 2) / audio.sample_rate
    wav = torch.stack([0.1 * torch.sin(2 * torch.pi * f * t) for f in (110.0, 220.0, 330.0, 440.0)]).sum(0)
    wav = wav + 0.01 * torch.randn(wav.shape, generator=g)
    mel = MelFrontEnd(audio)(wav, 192)[None, None]
    with torch.no_grad():
        return float(1.0 / vae.encode(mel).latent_dist.mode().std())


BUILDERS = {
    "tiny-random": lambda folder: build(folder, name="tiny-random", conditioning="clap"),
    "tiny-random-uncond": lambda folder: build(folder, name="tiny-random-uncond", conditioning="none"),
}
