"""Official MT-MusicLDM checkpoints -> our on-disk layout.

The authors publish a PyTorch-Lightning ``.ckpt`` (inside a ``.tar.gz``) holding the whole LDM:
``model.diffusion_model.*`` (UNet), ``model_ema.*`` (its EMA), ``first_stage_model.*`` (VAE, its
HiFi-GAN and its training loss), ``cond_stage_model.model.*`` (LAION CLAP), the noise schedule and
``scale_factor``. The VAE, HiFi-GAN and CLAP also exist as separate files (Zenodo 10643148), used
when the Lightning file lacks them.

Every source key is mapped to exactly one key of ours or dropped for a stated reason (training
loss, a buffer derived from others); anything else is an error naming the keys. Nothing is loaded
with ``strict=False``.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .components import quiet_libraries
from .config import PIPELINE_FILE, AudioConfig, PipelineConfig, SamplingDefaults
from .errors import NAME_ONLY, InputError, ModelError

Tensor = torch.Tensor
StateDict = dict[str, Tensor]

COMPONENT_FILES = {"vae": "vae-ckpt.ckpt", "vocoder": "hifigan-ckpt.ckpt", "clap": "clap-ckpt.pt"}
# HiFi-GAN strides and dilations are not in a state dict; these are the published 16 kHz / 64-mel ones.
HIFIGAN_RATES = [5, 4, 2, 2, 2]
HIFIGAN_DILATIONS = [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
TOKENIZER = ("FacebookAI/roberta-base", "e2da8e2f811d1448a5b465c236feacd80ffbac7b")
# The LDM buffers recomputed from ``betas`` (diffusers' scheduler derives them again).
SCHEDULE_BUFFERS = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "lvlb_weights", "logvar", "cond_ids",
}


@dataclass
class Report:
    """What happened to every key, per component: mapped, or dropped and why."""

    mapped: Counter = field(default_factory=Counter)
    dropped: dict[str, Counter] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def drop(self, component: str, reason: str, n: int = 1) -> None:
        self.dropped.setdefault(component, Counter())[reason] += n

    def as_dict(self) -> dict:
        return {"mapped": dict(self.mapped), "dropped": {c: dict(r) for c, r in self.dropped.items()},
                "sources": self.sources, "notes": self.notes}


def _unaccounted(component: str, keys, hint: str, kind: str = "unexpected", **params) -> ModelError:
    keys = sorted(keys)
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return ModelError(f"{component}: {len(keys)} {kind} checkpoint keys ({shown})", hint, **params)


def load_strict(module: torch.nn.Module, state: StateDict, component: str) -> None:
    """load_state_dict(strict=True), with an error that names the keys instead of a traceback."""
    ours = module.state_dict()
    missing, extra = set(ours) - set(state), set(state) - set(ours)
    if missing:
        raise _unaccounted(component, missing, "is it the right file?", kind="missing")
    if extra:
        raise _unaccounted(component, extra, "the checkpoint has keys this model does not: is it the right file?")
    bad = [k for k in ours if ours[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise ModelError(f"{component}: {len(bad)} keys differ in shape (first: {k} "
                         f"{tuple(state[k].shape)} vs {tuple(ours[k].shape)})", "the checkpoint does not fit this model")
    module.load_state_dict(state, strict=True)


# -- reading ------------------------------------------------------------------------------------
def read_checkpoint(path: Path, *, trust_pickle: bool = False) -> dict:
    """``torch.load`` with ``weights_only`` unless the caller trusts the file (pickles run code)."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(e), re.IGNORECASE)
        if found is None:  # not a pickle at all, or a damaged one
            raise ModelError(f"{path}: not a readable PyTorch checkpoint", "download it again") from None
        raise ModelError(f"{path}: holds Python objects beyond tensors (such as {found.group(1)})",
                         "if you trust the file, pass {trust_pickle} (loading a pickle can run code)",
                         trust_pickle=True) from None
    except Exception as e:  # torch.load on arbitrary bytes raises anything (IndexError on a WAV)
        reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({reason})", "download it again") from None


def _state_dict(obj: dict, path: Path) -> StateDict:
    for key in ("state_dict", "generator"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelError(f"{path}: no state dict found", "expected a Lightning .ckpt, hifigan-ckpt.ckpt or clap-ckpt.pt")
    return obj


def find_lightning_ckpt(src: Path, work: Path) -> Path:
    """The Lightning checkpoint in ``src``: the file, the ``.tar.gz`` holding it, or a folder."""
    if src.is_file() and src.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(src) as t:
                t.extractall(work, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise InputError(f"{src}: not a readable archive ({e})", "download it again") from None
        src = work
    if src.is_file():
        return src
    if not src.is_dir():
        raise InputError(f"{src}: no such file or folder", "give the .tar.gz, the .ckpt or a folder holding them")
    ckpts = sorted(p for p in src.rglob("*.ckpt") if p.name not in COMPONENT_FILES.values())
    last = [p for p in ckpts if p.name == "last.ckpt"]
    if len(last) == 1:
        return last[0]
    if len(ckpts) == 1:
        return ckpts[0]
    if not ckpts:
        raise InputError(f"{src}: holds no Lightning .ckpt", "give the MT-MusicLDM .tar.gz or its .ckpt")
    names = ", ".join(str(p.relative_to(src)) for p in ckpts[:4])
    raise InputError(f"{src}: holds several checkpoints ({names})", "pass the one you want as SRC")


# -- UNet ---------------------------------------------------------------------------------------
def unet_config_from_state(sd: StateDict, *, latent_channels: int, num_head_channels: int = 32):
    """Read the UNet hyper-parameters off the tensor shapes (the config is not in the checkpoint)."""
    from .model import UNetConfig

    try:
        conv_in = sd["input_blocks.0.0.weight"]
        mc, stems = conv_in.shape[:2]
        downs = sorted(int(k.split(".")[1]) for k in sd if re.fullmatch(r"input_blocks\.\d+\.0\.op\.weight", k))
        levels = len(downs) + 1
        n_out = len({int(k.split(".")[1]) for k in sd if k.startswith("output_blocks.")})
        nrb = n_out // levels - 1
        mult, attn, idx = [], [], 1
        for level in range(levels):
            mult.append(sd[f"input_blocks.{idx}.0.in_layers.2.weight"].shape[0] // mc)
            if f"input_blocks.{idx}.1.qkv.weight" in sd:
                attn.append(2**level)
            idx += nrb + 1
        film = sd.get("film_emb.weight")
        return UNetConfig(stems=stems, latent_channels=latent_channels, model_channels=mc, channel_mult=tuple(mult),
                          num_res_blocks=nrb, attention_resolutions=tuple(attn), num_head_channels=num_head_channels,
                          cond_dim=None if film is None else film.shape[1], norm_groups=32)
    except (KeyError, IndexError) as e:
        raise ModelError(f"UNet: cannot read its layout from the checkpoint (missing {e})",
                         "is this an MT-MusicLDM checkpoint?") from None


def ema_to_unet(ema: StateDict, names: list[str]) -> StateDict:
    """LitEma stores ``diffusion_model`` + the parameter name with its dots removed; put them back."""
    lookup = {"diffusion_model" + n.replace(".", ""): n for n in names}
    if len(lookup) != len(names):
        raise ModelError("UNet EMA: parameter names collide once dots are removed", "convert with {use_ema}",
                         use_ema=False)
    out, extra = {}, []
    for k, v in ema.items():
        if k in lookup:
            out[lookup[k]] = v
        elif k not in ("decay", "num_updates"):
            extra.append(k)
    if extra:
        raise _unaccounted("UNet EMA", extra, "convert with {use_ema} to use the raw weights", use_ema=False)
    return out


# -- VAE: LDM Encoder/Decoder names <-> diffusers AutoencoderKL --------------------------------
_VAE_RULES = [  # (LDM regex, diffusers template); the number of up blocks is needed to flip their order
    (r"(encoder|decoder)\.norm_out\.(.+)", r"\1.conv_norm_out.\2"),
    (r"encoder\.down\.(\d+)\.block\.(\d+)\.nin_shortcut\.(.+)", r"encoder.down_blocks.\1.resnets.\2.conv_shortcut.\3"),
    (r"encoder\.down\.(\d+)\.block\.(\d+)\.(.+)", r"encoder.down_blocks.\1.resnets.\2.\3"),
    (r"encoder\.down\.(\d+)\.downsample\.conv\.(.+)", r"encoder.down_blocks.\1.downsamplers.0.conv.\2"),
    (r"decoder\.up\.(\d+)\.block\.(\d+)\.nin_shortcut\.(.+)", r"decoder.up_blocks.{up}.resnets.\2.conv_shortcut.\3"),
    (r"decoder\.up\.(\d+)\.block\.(\d+)\.(.+)", r"decoder.up_blocks.{up}.resnets.\2.\3"),
    (r"decoder\.up\.(\d+)\.upsample\.conv\.(.+)", r"decoder.up_blocks.{up}.upsamplers.0.conv.\2"),
    (r"(encoder|decoder)\.mid\.block_1\.nin_shortcut\.(.+)", r"\1.mid_block.resnets.0.conv_shortcut.\2"),
    (r"(encoder|decoder)\.mid\.block_2\.nin_shortcut\.(.+)", r"\1.mid_block.resnets.1.conv_shortcut.\2"),
    (r"(encoder|decoder)\.mid\.block_1\.(.+)", r"\1.mid_block.resnets.0.\2"),
    (r"(encoder|decoder)\.mid\.block_2\.(.+)", r"\1.mid_block.resnets.1.\2"),
    (r"(encoder|decoder)\.mid\.attn_1\.norm\.(.+)", r"\1.mid_block.attentions.0.group_norm.\2"),
    (r"(encoder|decoder)\.mid\.attn_1\.(q|k|v)\.(.+)", r"\1.mid_block.attentions.0.to_\2.\3"),
    (r"(encoder|decoder)\.mid\.attn_1\.proj_out\.(.+)", r"\1.mid_block.attentions.0.to_out.0.\2"),
    (r"(encoder\.conv_in|encoder\.conv_out|decoder\.conv_in|decoder\.conv_out|quant_conv|post_quant_conv)\.(.+)",
     r"\1.\2"),
]


def vae_key_to_diffusers(key: str, n_up: int) -> str | None:
    for pattern, template in _VAE_RULES:
        m = re.fullmatch(pattern, key)
        if m:
            up = n_up - 1 - int(m.group(1)) if "{up}" in template else 0
            return m.expand(template.replace("{up}", str(up)))
    return None


def _rename(sd: StateDict, key_fn: Callable[[str], str | None], component: str, hint: str) -> StateDict:
    """``{key_fn(k): v}``; keys that ``key_fn`` does not know (None) are an error naming them."""
    out, extra = {}, []
    for k, v in sd.items():
        new = key_fn(k)
        if new is None:
            extra.append(k)
        else:
            out[new] = v
    if extra:
        raise _unaccounted(component, extra, hint)
    return out


def vae_to_diffusers(sd: StateDict, n_up: int) -> StateDict:
    out = _rename(sd, lambda k: vae_key_to_diffusers(k, n_up), "VAE", "not an LDM AutoencoderKL state dict")
    for k, v in out.items():
        if ".mid_block.attentions." in k and k.endswith("weight") and v.ndim == 4:
            out[k] = v[:, :, 0, 0]  # 1x1 conv -> linear
    return out


def vae_from_state(sd: StateDict, scaling_factor: float):
    from diffusers import AutoencoderKL

    try:
        ch = sd["encoder.conv_in.weight"].shape[0]
        levels = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down."))
        mults = [sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels)]
        per_level = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("encoder.down.0.block."))
        latent = sd["post_quant_conv.weight"].shape[0]
        has_attn = "encoder.mid.attn_1.q.weight" in sd
    except (KeyError, ValueError) as e:
        raise ModelError(f"VAE: cannot read its layout from the checkpoint ({e})", "is this an LDM VAE?") from None
    vae = AutoencoderKL(
        in_channels=sd["encoder.conv_in.weight"].shape[1], out_channels=sd["decoder.conv_out.weight"].shape[0],
        latent_channels=latent, block_out_channels=tuple(ch * m for m in mults), layers_per_block=per_level,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        norm_num_groups=32, sample_size=AudioConfig().segment_frames, scaling_factor=scaling_factor,
        mid_block_add_attention=has_attn,
    )
    module: torch.nn.Module = vae  # type: ignore[assignment]  # diffusers' lazy exports hide that it is one
    load_strict(module, vae_to_diffusers(sd, levels), "VAE")
    return module.eval()


# -- HiFi-GAN: original names (maybe weight-normed) <-> transformers SpeechT5HifiGan -----------
def fold_weight_norm(sd: StateDict) -> StateDict:
    """``weight_g``/``weight_v`` pairs (torch's weight_norm, dim 0) -> plain ``weight``."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight_v"):
            g = sd[k[:-1] + "g"]
            norm = v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.ndim - 1)))
            out[k[: -len("_v")]] = g * v / norm
        elif not k.endswith(".weight_g"):
            out[k] = v
    return out


def hifigan_key_to_ours(key: str) -> str | None:
    m = re.fullmatch(r"(conv_pre|conv_post)\.(weight|bias)|resblocks\.\d+\.convs[12]\.\d+\.(weight|bias)", key)
    if m:
        return key
    m = re.fullmatch(r"ups\.(\d+)\.(weight|bias)", key)
    return f"upsampler.{m.group(1)}.{m.group(2)}" if m else None


def vocoder_from_state(sd: StateDict, sample_rate: int):
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    sd = fold_weight_norm(sd)
    try:
        pre = sd["conv_pre.weight"]
        n_up = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("ups."))
        kernels = [sd[f"ups.{i}.weight"].shape[-1] for i in range(n_up)]
        n_res = (1 + max(int(k.split(".")[1]) for k in sd if k.startswith("resblocks."))) // n_up
        res_kernels = [sd[f"resblocks.{j}.convs1.0.weight"].shape[-1] for j in range(n_res)]
    except (KeyError, ValueError) as e:
        raise ModelError(f"vocoder: cannot read its layout from the checkpoint ({e})", "is this a HiFi-GAN?") from None
    if n_up != len(HIFIGAN_RATES):
        raise ModelError(f"vocoder: {n_up} upsampling layers, the published HiFi-GAN has {len(HIFIGAN_RATES)}",
                         "only the 16 kHz / 64-mel MusicLDM vocoder is supported")
    cfg = SpeechT5HifiGanConfig(
        model_in_dim=pre.shape[1], sampling_rate=sample_rate, upsample_initial_channel=pre.shape[0],
        upsample_rates=HIFIGAN_RATES, upsample_kernel_sizes=kernels, resblock_kernel_sizes=res_kernels,
        resblock_dilation_sizes=HIFIGAN_DILATIONS[:n_res], normalize_before=False,
    )
    vocoder = SpeechT5HifiGan(cfg)
    state = _rename(sd, hifigan_key_to_ours, "vocoder", "not a HiFi-GAN generator state dict")
    # SpeechT5HifiGan's input normalisation buffers, unused with normalize_before=False
    state |= {"mean": torch.zeros(cfg.model_in_dim), "scale": torch.ones(cfg.model_in_dim)}
    load_strict(vocoder, state, "vocoder")
    return vocoder.eval()


# -- CLAP: LAION CLAP (HTSAT + RoBERTa) <-> transformers ClapModel ------------------------------
CLAP_DROPPED = [  # (regex, reason): LAION keys with no counterpart in ClapModel, and why that is fine
    (r"audio_branch\.(spectrogram_extractor|logmel_extractor)\..+", "front end: ClapFeatureExtractor computes the mel"),
    (r"audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask", "derived: the shifted-window mask is recomputed"),
    (r"audio_branch\.(tscam_conv|head)\..+", "AudioSet classification head: not used for embeddings"),
    (r"(audio|text)_transform\..+", "linear-probe MLP: not used for embeddings"),
    (r"text_branch\.embeddings\.position_ids", "derived: position ids are recomputed"),
]
_CLAP_RULES = [
    (r"text_branch\.(.+)", r"text_model.\1"),
    (r"(audio|text)_projection\.0\.(.+)", r"\1_projection.linear1.\2"),
    (r"(audio|text)_projection\.2\.(.+)", r"\1_projection.linear2.\2"),
    (r"logit_scale_(a|t)", r"logit_scale_\1"),
    (r"audio_branch\.bn0\.(.+)", r"audio_model.audio_encoder.batch_norm.\1"),
    (r"audio_branch\.(patch_embed\.(?:proj|norm)|norm)\.(.+)", r"audio_model.audio_encoder.\1.\2"),
    (r"audio_branch\.layers\.(\d+)\.downsample\.(.+)", r"audio_model.audio_encoder.layers.\1.downsample.\2"),
    (r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.(.+)", r"audio_model.audio_encoder.layers.\1.blocks.\2.{inner}"),
]
_SWIN_BLOCK = {
    "norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
    "attn.relative_position_bias_table": "attention.self.relative_position_bias_table",
    "attn.relative_position_index": "attention.self.relative_position_index",
    "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
}


def clap_key_to_hf(key: str) -> list[str] | None:
    """The ClapModel key(s) of a LAION key (a fused ``qkv`` becomes three); None when unknown."""
    for pattern, template in _CLAP_RULES:
        m = re.fullmatch(pattern, key)
        if not m:
            continue
        if "{inner}" not in template:
            return [m.expand(template)]
        inner = m.group(3)
        prefix = m.expand(template.replace("{inner}", ""))
        if inner.startswith("attn.qkv."):
            leaf = inner.rsplit(".", 1)[1]
            return [f"{prefix}attention.self.{q}.{leaf}" for q in ("query", "key", "value")]
        for src, dst in _SWIN_BLOCK.items():
            if inner == src or inner.startswith(src + "."):
                return [prefix + dst + inner[len(src):]]
        return None
    return None


def clap_to_hf(sd: StateDict, report: Report | None = None) -> StateDict:
    out: StateDict = {}
    extra: list[str] = []
    for k, v in sd.items():
        reason = next((r for p, r in CLAP_DROPPED if re.fullmatch(p, k)), None)
        if reason:
            if report:
                report.drop("clap", reason)
            continue
        new = clap_key_to_hf(k)
        if new is None:
            extra.append(k)
        elif len(new) == 3:
            out.update(zip(new, v.chunk(3, dim=0)))
        else:
            out[new[0]] = v
    if extra:
        raise _unaccounted("CLAP", extra, "not a LAION CLAP (HTSAT + RoBERTa, unfused) state dict")
    return out


def clap_config_from_state(sd: StateDict):
    """ClapConfig from LAION shapes; text heads follow RoBERTa's 64-wide heads."""
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    try:
        blocks = Counter(int(m.group(1)) for k in sd
                         if (m := re.fullmatch(r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.weight", k)))
        depths = [blocks[i] for i in range(len(blocks))]
        tables = [sd[f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(len(depths))]
        window = (int(round(tables[0].shape[0] ** 0.5)) + 1) // 2
        patch = sd["audio_branch.patch_embed.proj.weight"]
        proj = sd["audio_projection.2.weight"].shape[0]
        mels = sd["audio_branch.bn0.weight"].shape[0]
        emb = sd["text_branch.embeddings.word_embeddings.weight"]
        n_text = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("text_branch.encoder.layer."))
    except (KeyError, ValueError, IndexError) as e:
        raise ModelError(f"CLAP: cannot read its layout from the checkpoint ({e})",
                         "expected LAION CLAP with an HTSAT audio tower and a RoBERTa text tower") from None
    if any(k.startswith("audio_branch.fusion_model") for k in sd):
        raise ModelError("CLAP: this is a fusion CLAP", "only the unfused HTSAT CLAP used by MusicLDM is supported")
    hidden = emb.shape[1]
    audio = ClapAudioConfig(
        window_size=window, num_mel_bins=mels, spec_size=4 * mels, num_hidden_layers=len(depths),
        patch_size=patch.shape[-1], patch_stride=[patch.shape[-1]] * 2, patch_embeds_hidden_size=patch.shape[0],
        hidden_size=patch.shape[0] * 2 ** (len(depths) - 1), depths=depths,
        num_attention_heads=[t.shape[1] for t in tables], projection_dim=proj, enable_fusion=False,
        projection_hidden_act="relu",
    )
    text = ClapTextConfig(
        vocab_size=emb.shape[0], hidden_size=hidden, num_hidden_layers=n_text, num_attention_heads=max(1, hidden // 64),
        intermediate_size=sd["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=sd["text_branch.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=sd["text_branch.embeddings.token_type_embeddings.weight"].shape[0], projection_dim=proj,
        projection_hidden_act="relu", layer_norm_eps=1e-5,  # RoBERTa's and LAION's (transformers' default is 1e-12)
    )
    return ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=proj)


def clap_from_state(sd: StateDict, report: Report):
    from transformers import ClapModel

    model = ClapModel(clap_config_from_state(sd)).eval()
    state = clap_to_hf(sd, report)
    ours = model.state_dict()
    for k in ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids"):
        if k in ours and k not in state:
            state[k] = ours[k]  # derived buffers
    if "audio_model.audio_encoder.batch_norm.num_batches_tracked" not in state:
        state["audio_model.audio_encoder.batch_norm.num_batches_tracked"] = torch.tensor(0)
    load_strict(model, state, "CLAP")
    return model


def clap_processor(tokenizer: str | Path, *, mels: int = 64, sample_rate: int = 48000, max_seconds: float = 10.0):
    """The processor LAION CLAP expects: RoBERTa tokens; 48 kHz, 64 mels 50-14000 Hz, hop 480."""
    from transformers import ClapFeatureExtractor, ClapProcessor, RobertaTokenizer

    local = Path(tokenizer).expanduser()
    try:
        if local.is_dir():
            tok = RobertaTokenizer.from_pretrained(local)
        else:
            repo, _, rev = str(tokenizer).partition("@")
            tok = RobertaTokenizer.from_pretrained(repo, revision=rev or (TOKENIZER[1] if repo == TOKENIZER[0] else "main"))
    except OSError as e:
        raise ModelError(f"CLAP tokenizer '{tokenizer}': cannot load it ({str(e).splitlines()[0][:120]})",
                         "go online once, or pass {tokenizer} with a local roberta-base folder",
                         tokenizer=NAME_ONLY) from None
    fe = ClapFeatureExtractor(feature_size=mels, sampling_rate=sample_rate, hop_length=480, fft_window_size=1024,
                              max_length_s=int(max_seconds), frequency_min=50, frequency_max=14000,
                              truncation="rand_trunc", padding="repeatpad")
    return ClapProcessor(feature_extractor=fe, tokenizer=tok)


# -- schedule -----------------------------------------------------------------------------------
def scheduler_from_betas(betas: Tensor | None, report: Report):
    """DDIM with MT-MusicLDM's schedule; checked against the checkpoint's betas when it has them."""
    from .samplers import training_scheduler

    published = training_scheduler()
    if betas is None:
        report.notes.append("no betas in the checkpoint: used the published schedule")
        return published
    if len(betas) == len(published.betas) and torch.allclose(betas.double(), published.betas.double(),
                                                             rtol=1e-4, atol=1e-7):
        return published
    report.notes.append("the checkpoint's betas differ from the published schedule: carried over as trained_betas")
    return training_scheduler(num_train_timesteps=len(betas), trained_betas=betas.double().tolist())


# -- the whole model ----------------------------------------------------------------------------
def split_lightning(sd: StateDict, report: Report) -> dict[str, StateDict]:
    parts: dict[str, StateDict] = {"unet": {}, "ema": {}, "vae": {}, "vocoder": {}, "clap": {}, "buffers": {}}
    prefixes = [("model.diffusion_model.", "unet"), ("model_ema.", "ema"), ("first_stage_model.vocoder.", "vocoder"),
                ("first_stage_model.loss.", None), ("first_stage_model.", "vae"), ("cond_stage_model.model.", "clap")]
    extra = []
    for k, v in sd.items():
        for prefix, part in prefixes:
            if k.startswith(prefix):
                if part is None:
                    report.drop("vae", "training loss (LPIPS and discriminator)")
                else:
                    parts[part][k[len(prefix):]] = v
                break
        else:
            if k in SCHEDULE_BUFFERS or k == "scale_factor":
                parts["buffers"][k] = v
            else:
                extra.append(k)
    if extra:
        raise _unaccounted("checkpoint", extra, "not an MT-MusicLDM Lightning checkpoint")
    return parts


def convert(src: str | Path, out: str | Path, *, name: str | None = None, vae: Path | None = None,
            vocoder: Path | None = None, clap: Path | None = None, tokenizer: str | Path = TOKENIZER[0],
            use_ema: bool = True, trust_pickle: bool = False, force: bool = False, provenance: dict | None = None,
            fetch: Callable[[str], Path] | None = None, progress: Callable[[str], None] | None = None) -> Report:
    """Convert official MT-MusicLDM files to our layout in ``out`` (written whole, or not at all).

    ``src`` is the ``.tar.gz``, its ``.ckpt``, or a folder holding them (and, optionally,
    ``vae-ckpt.ckpt``, ``hifigan-ckpt.ckpt``, ``clap-ckpt.pt``). A component missing from the
    Lightning file is read from those, from the explicit paths, or from ``fetch(component)``.
    """
    from .model import MultiTrackUNet

    quiet_libraries()
    src, out = Path(src).expanduser(), Path(out).expanduser()
    say = progress or (lambda _m: None)
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"{out}: exists and is not empty", "choose another {out}, or pass {force} to replace it",
                         out=NAME_ONLY, force=True)
    report = Report()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert.", dir=out.parent))
    try:
        ckpt = find_lightning_ckpt(src, work / "src")
        say(f"reading {ckpt.name}")
        raw = read_checkpoint(ckpt, trust_pickle=trust_pickle)
        parts = split_lightning(_state_dict(raw, ckpt), report)
        del raw
        report.sources["unet"] = ckpt.name
        folder = src if src.is_dir() else src.parent

        vocoder_from_vae: list[str | None] = [None]  # the VAE file's name, when its vocoder copy is the one used

        def component(part: str, explicit: Path | None) -> StateDict:
            if parts[part] and explicit is None:
                report.sources[part] = (part == "vocoder" and vocoder_from_vae[0]) or ckpt.name
                return parts[part]
            path = explicit or folder / COMPONENT_FILES[part]
            if not path.is_file() and fetch is not None:
                path = fetch(part)
            if not path.is_file():
                raise InputError(f"{ckpt.name} has no {part} weights and {path} does not exist",
                                 f"put {COMPONENT_FILES[part]} (Zenodo record 10643148) beside it, or pass {{{part}}}",
                                 **{part: NAME_ONLY})
            say(f"reading {path.name}")
            sd = _state_dict(read_checkpoint(path, trust_pickle=trust_pickle), path)
            if part == "clap":
                sd = {k.removeprefix("module."): v for k, v in sd.items()}
            report.sources[part] = path.name
            if part == "vae":  # a VAE Lightning file also holds its training loss and maybe a vocoder
                voc = {k.removeprefix("vocoder."): v for k, v in sd.items() if k.startswith("vocoder.")}
                if voc and not parts["vocoder"] and vocoder is None:
                    parts["vocoder"], vocoder_from_vae[0] = voc, path.name
                elif voc:
                    report.drop("vae", "vocoder copy in the VAE file (another source is used)", len(voc))
                report.drop("vae", "training loss (LPIPS and discriminator)", sum(k.startswith("loss.") for k in sd))
                sd = {k: v for k, v in sd.items() if not k.startswith(("loss.", "vocoder."))}
            return sd

        buffers = parts["buffers"]
        scale = float(buffers.get("scale_factor", torch.tensor(1.0)))
        if "scale_factor" not in buffers:
            report.notes.append("no scale_factor in the checkpoint: latents are not rescaled")
        report.drop("schedule", "derived from betas", sum(k in SCHEDULE_BUFFERS and k != "betas" for k in buffers))

        say("converting the VAE")
        vae_model = vae_from_state(component("vae", vae), scale)
        report.mapped["vae"] = len(vae_model.state_dict())
        say("converting the vocoder")
        vocoder_model = vocoder_from_state(component("vocoder", vocoder), AudioConfig().sample_rate)
        report.mapped["vocoder"] = sum(k not in ("mean", "scale") for k in vocoder_model.state_dict())

        say("converting the UNet" + (" (EMA weights)" if use_ema and parts["ema"] else ""))
        cfg = unet_config_from_state(parts["unet"], latent_channels=vae_model.config.latent_channels)
        unet_state = parts["unet"]
        if use_ema and parts["ema"]:
            unet_state = ema_to_unet(parts["ema"], list(unet_state))
            report.drop("unet", "EMA bookkeeping (decay, num_updates)", len(parts["ema"]) - len(unet_state))
            report.drop("unet", "raw (non-EMA) weights: the EMA copy is used, as the authors sample", len(parts["unet"]))
        elif parts["ema"]:
            report.drop("unet", "EMA weights (use_ema off)", len(parts["ema"]))
        unet = MultiTrackUNet(cfg)
        load_strict(unet, unet_state, "UNet")
        report.mapped["unet"] = len(unet_state)

        conditional = cfg.cond_dim is not None
        clap_model = processor = None
        if conditional:
            say("converting CLAP")
            clap_model = clap_from_state(component("clap", clap), report)
            report.mapped["clap"] = len(clap_model.state_dict())
            if clap_model.config.projection_dim != cfg.cond_dim:
                raise ModelError(f"CLAP embeds in {clap_model.config.projection_dim} dimensions, the UNet expects "
                                 f"{cfg.cond_dim}", "the CLAP file does not belong to this model")
            processor = clap_processor(tokenizer, mels=clap_model.config.audio_config.num_mel_bins)
        elif parts["clap"]:
            report.drop("clap", "unconditional model: CLAP unused", len(parts["clap"]))

        scheduler = scheduler_from_betas(buffers.get("betas"), report)
        report.mapped["scheduler"] = int("betas" in buffers)
        report.mapped["vae"] += int("scale_factor" in buffers)  # -> vae scaling_factor
        pipe_cfg = PipelineConfig(
            name=name or ckpt.parent.parent.name or ckpt.stem,
            description=f"MT-MusicLDM, converted from {ckpt.name}" + (" (EMA)" if use_ema and parts["ema"] else ""),
            conditioning="clap" if conditional else "none",
            audio=AudioConfig(stems=_stem_names(cfg.stems)),
            sampling=SamplingDefaults(),
        )
        stage = work / "out"
        stage.mkdir()
        say(f"writing {out}")
        vae_model.save_pretrained(stage / "vae")
        unet.save_pretrained(stage / "unet")
        vocoder_model.save_pretrained(stage / "vocoder")
        scheduler.save_pretrained(stage / "scheduler")
        if clap_model is not None and processor is not None:
            clap_model.save_pretrained(stage / "clap")
            processor.save_pretrained(stage / "clap")
        record = {"source": provenance or {"path": str(src)}} | report.as_dict()
        (stage / "convert.json").write_text(json.dumps(record, indent=2) + "\n")
        (stage / PIPELINE_FILE).write_text(pipe_cfg.model_dump_json(indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _stem_names(n: int) -> tuple[str, ...]:
    from .config import DEFAULT_STEMS

    if n == len(DEFAULT_STEMS):
        return DEFAULT_STEMS
    raise ModelError(f"UNet has {n} stems; the published models have {len(DEFAULT_STEMS)}",
                     "convert a 4-stem (bass, drums, guitar, piano) MT-MusicLDM checkpoint")

