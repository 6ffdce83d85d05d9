"""Our own CLAP's parts: its transformers config, its processor (feature extractor and a tokenizer
built from the caption vocabulary), its batches, and the track metadata its captions come from."""

from __future__ import annotations

import json

import torch

from ..errors import InputError
from .config import TrainConfig


def clap_config(cfg: TrainConfig, vocab_size: int):
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    c = cfg.clap
    assert c is not None
    audio = ClapAudioConfig(
        num_mel_bins=c.n_mels, spec_size=c.spec_size, patch_size=c.patch_size, patch_stride=c.patch_size,
        window_size=c.window_size, hidden_size=c.audio_hidden * 2 ** (len(c.audio_depths) - 1),
        patch_embeds_hidden_size=c.audio_hidden, depths=list(c.audio_depths), num_attention_heads=list(c.audio_heads),
        num_hidden_layers=len(c.audio_depths), projection_dim=c.projection_dim, enable_fusion=False)
    text = ClapTextConfig(
        vocab_size=vocab_size, hidden_size=c.text_hidden, num_hidden_layers=c.text_layers,
        num_attention_heads=c.text_heads, intermediate_size=4 * c.text_hidden, max_position_embeddings=c.max_tokens + 2,
        projection_dim=c.projection_dim, layer_norm_eps=1e-5)
    return ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=c.projection_dim)


def build_clap_processor(cfg: TrainConfig):
    """ClapProcessor: a feature extractor at our sample rate, and a byte-level BPE tokenizer trained (with
    the ``tokenizers`` library, deterministically) on every word a caption can hold."""
    import tempfile

    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapFeatureExtractor, ClapProcessor, RobertaTokenizer

    from ..data.captions import vocabulary_corpus

    c = cfg.clap
    assert c is not None
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator(vocabulary_corpus(), vocab_size=c.vocab_size, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = bpe.save_model(tmp)
        tokenizer = RobertaTokenizer(vocab, merges, model_max_length=c.max_tokens,
                                     add_prefix_space=True)
    rate = cfg.audio.sample_rate
    features = ClapFeatureExtractor(
        feature_size=c.n_mels, sampling_rate=rate, hop_length=c.hop_length, fft_window_size=cfg.audio.n_fft,
        max_length_s=c.seconds, frequency_min=cfg.audio.f_min, frequency_max=min(cfg.audio.f_max, rate / 2),
        truncation="rand_trunc", padding="repeatpad")
    return ClapProcessor(feature_extractor=features, tokenizer=tokenizer)


def clap_inputs(processor, texts, mix: torch.Tensor, sample_rate: int):
    """Token ids and audio features of a batch, made as the pipeline makes them."""
    from ..conditioning import clap_audio_inputs, clap_text_inputs

    audio = clap_audio_inputs(processor, mix, sample_rate)
    return clap_text_inputs(processor, texts) | {"input_features": audio["input_features"]}


def track_metas(data) -> dict[str, dict]:
    """Each track's meta.json (captions are drawn from it); tracks without style, tempo and key are an error."""
    metas = {}
    for track in data.tracks:
        try:
            metas[track.name] = json.loads((track.path / "meta.json").read_text())
        except (OSError, ValueError):
            metas[track.name] = {}
    missing = [name for name, m in metas.items() if not {"style", "tempo", "key"} <= set(m)]
    if missing:
        raise InputError(f"{data.tracks[0].path.parent}: {len(missing)} track(s) have no meta.json with style, "
                         f"tempo and key (e.g. {missing[0]})", "the clap stage trains on captioned tracks "
                         "(mtldm data synth writes them)")
    return metas
