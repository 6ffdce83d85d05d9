"""Test-side stand-ins for the authors' files: state dicts in the official key layout, built from
tiny configs, and straightforward reference computations (LDM UNet, original HiFi-GAN) over them.

Written from the LDM / HiFi-GAN / LAION-CLAP architectures, independently of ``mtldm_cli``, so the
converter and our modules are checked against something they did not produce.
"""

from __future__ import annotations

import math
import re
import tarfile
from pathlib import Path

import torch
import torch.nn.functional as F

G = 32  # LDM's GroupNorm32


def _rand(shape, g, std=0.05):
    return torch.randn(shape, generator=g) * std


# -- LDM openaimodel UNet, dims=3 ---------------------------------------------------------------
def unet_plan(mc=32, mult=(1, 2), nrb=1, attn=(2,), stems=4):
    """Block-by-block plan: what each input/middle/output block holds, as LDM builds it."""
    inputs, outputs, skips, ch, ds = [[("conv_in", stems, mc)]], [], [mc], mc, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            block = [("res", ch, m * mc)]
            ch = m * mc
            if ds in attn:
                block.append(("attn", ch))
            inputs.append(block)
            skips.append(ch)
        if level != len(mult) - 1:
            inputs.append([("down", ch)])
            skips.append(ch)
            ds *= 2
    middle = [("res", ch, ch), ("attn", ch), ("res", ch, ch)]
    for level, m in reversed(list(enumerate(mult))):
        for i in range(nrb + 1):
            block = [("res", ch + skips.pop(), m * mc)]
            ch = m * mc
            if ds in attn:
                block.append(("attn", ch))
            if level and i == nrb:
                block.append(("up", ch))
                ds //= 2
            outputs.append(block)
    return inputs, middle, outputs, ch


def unet_shapes(*, mc=32, mult=(1, 2), nrb=1, attn=(2,), stems=4, cond_dim=24) -> dict:
    """Names and shapes of an official ``model.diffusion_model.*`` state dict (without the prefix)."""
    shapes, tdim = {}, 4 * mc
    emb = 2 * tdim if cond_dim else tdim

    def p(name, *shape):
        shapes[name] = shape

    def add(prefix, op):
        kind = op[0]
        if kind == "conv_in":
            p(f"{prefix}.weight", op[2], op[1], 3, 3, 3), p(f"{prefix}.bias", op[2])
        elif kind == "res":
            cin, cout = op[1], op[2]
            p(f"{prefix}.in_layers.0.weight", cin), p(f"{prefix}.in_layers.0.bias", cin)
            p(f"{prefix}.in_layers.2.weight", cout, cin, 3, 3, 3), p(f"{prefix}.in_layers.2.bias", cout)
            p(f"{prefix}.emb_layers.1.weight", cout, emb), p(f"{prefix}.emb_layers.1.bias", cout)
            p(f"{prefix}.out_layers.0.weight", cout), p(f"{prefix}.out_layers.0.bias", cout)
            p(f"{prefix}.out_layers.3.weight", cout, cout, 3, 3, 3), p(f"{prefix}.out_layers.3.bias", cout)
            if cin != cout:
                p(f"{prefix}.skip_connection.weight", cout, cin, 1, 1, 1), p(f"{prefix}.skip_connection.bias", cout)
        elif kind == "attn":
            c = op[1]
            p(f"{prefix}.norm.weight", c), p(f"{prefix}.norm.bias", c)
            p(f"{prefix}.qkv.weight", 3 * c, c, 1), p(f"{prefix}.qkv.bias", 3 * c)
            p(f"{prefix}.proj_out.weight", c, c, 1), p(f"{prefix}.proj_out.bias", c)
        elif kind == "down":
            p(f"{prefix}.op.weight", op[1], op[1], 3, 3, 3), p(f"{prefix}.op.bias", op[1])
        elif kind == "up":
            p(f"{prefix}.conv.weight", op[1], op[1], 3, 3, 3), p(f"{prefix}.conv.bias", op[1])

    p("time_embed.0.weight", tdim, mc), p("time_embed.0.bias", tdim)
    p("time_embed.2.weight", tdim, tdim), p("time_embed.2.bias", tdim)
    if cond_dim:
        p("film_emb.weight", tdim, cond_dim), p("film_emb.bias", tdim)
    inputs, middle, outputs, ch = unet_plan(mc, mult, nrb, attn, stems)
    for i, block in enumerate(inputs):
        for j, op in enumerate(block):
            add(f"input_blocks.{i}.{j}", op)
    for j, op in enumerate(middle):
        add(f"middle_block.{j}", op)
    for i, block in enumerate(outputs):
        for j, op in enumerate(block):
            add(f"output_blocks.{i}.{j}", op)
    p("out.0.weight", ch), p("out.0.bias", ch)
    p("out.2.weight", stems, mc, 3, 3, 3), p("out.2.bias", stems)
    return shapes


def unet_state(*, cond_dim=24, seed=0, **cfg) -> dict:
    """Random weights in the official layout; GroupNorm scales near 1, nothing zero-initialised."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in unet_shapes(cond_dim=cond_dim, **cfg).items():
        scale = len(shape) == 1 and name.endswith("weight")  # every 1-D weight is a GroupNorm scale
        out[name] = _rand(shape, g, 0.05 if len(shape) > 1 else 0.2) + (1.0 if scale else 0.0)
    return out


def unet_reference(sd, x, t, y, *, mc=32, mult=(1, 2), nrb=1, attn=(2,), head_channels=32):
    """LDM's UNetModel.forward, written out over the raw state dict."""
    half = mc // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    emb = F.linear(F.silu(F.linear(temb, sd["time_embed.0.weight"], sd["time_embed.0.bias"])),
                   sd["time_embed.2.weight"], sd["time_embed.2.bias"])
    if "film_emb.weight" in sd:
        emb = torch.cat([emb, F.linear(y, sd["film_emb.weight"], sd["film_emb.bias"])], -1)

    def gn(h, name):
        return F.group_norm(h, G, sd[f"{name}.weight"], sd[f"{name}.bias"])

    def conv(h, name, **kw):
        return F.conv3d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], **kw)

    def run(h, prefix, op):
        kind = op[0]
        if kind == "conv_in":
            return conv(h, prefix, padding=1)
        if kind == "res":
            a = conv(F.silu(gn(h, f"{prefix}.in_layers.0")), f"{prefix}.in_layers.2", padding=1)
            a = a + F.linear(F.silu(emb), sd[f"{prefix}.emb_layers.1.weight"], sd[f"{prefix}.emb_layers.1.bias"])[..., None, None, None]
            a = conv(F.silu(gn(a, f"{prefix}.out_layers.0")), f"{prefix}.out_layers.3", padding=1)
            skip = conv(h, f"{prefix}.skip_connection") if f"{prefix}.skip_connection.weight" in sd else h
            return skip + a
        if kind == "attn":
            b, c, *spatial = h.shape
            flat = h.reshape(b, c, -1)
            qkv = F.conv1d(gn(flat, f"{prefix}.norm"), sd[f"{prefix}.qkv.weight"], sd[f"{prefix}.qkv.bias"])
            heads = c // head_channels
            q, k, v = qkv.reshape(b * heads, 3 * head_channels, -1).split(head_channels, dim=1)
            scale = 1 / math.sqrt(math.sqrt(head_channels))
            w = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
            a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
            a = F.conv1d(a, sd[f"{prefix}.proj_out.weight"], sd[f"{prefix}.proj_out.bias"])
            return (flat + a).reshape(b, c, *spatial)
        if kind == "down":
            return conv(h, f"{prefix}.op", stride=(1, 2, 2), padding=1)
        h = F.interpolate(h, (h.shape[2], h.shape[3] * 2, h.shape[4] * 2), mode="nearest")
        return conv(h, f"{prefix}.conv", padding=1)

    inputs, middle, outputs, _ = unet_plan(mc, mult, nrb, attn, x.shape[1])
    h, hs = x, []
    for i, block in enumerate(inputs):
        for j, op in enumerate(block):
            h = run(h, f"input_blocks.{i}.{j}", op)
        hs.append(h)
    for j, op in enumerate(middle):
        h = run(h, f"middle_block.{j}", op)
    for i, block in enumerate(outputs):
        h = torch.cat([h, hs.pop()], 1)
        for j, op in enumerate(block):
            h = run(h, f"output_blocks.{i}.{j}", op)
    return conv(F.silu(gn(h, "out.0")), "out.2", padding=1)


# -- LDM AutoencoderKL (encoder/decoder names) ----------------------------------------------
def vae_state(*, ch=32, mult=(1, 2), nrb=1, z=8, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def p(name, *shape):
        is_scale = len(shape) == 1 and "norm" in name and name.endswith("weight")
        sd[name] = _rand(shape, g, 0.05) + (1.0 if is_scale else 0.0)

    def res(prefix, cin, cout):
        p(f"{prefix}.norm1.weight", cin), p(f"{prefix}.norm1.bias", cin)
        p(f"{prefix}.conv1.weight", cout, cin, 3, 3), p(f"{prefix}.conv1.bias", cout)
        p(f"{prefix}.norm2.weight", cout), p(f"{prefix}.norm2.bias", cout)
        p(f"{prefix}.conv2.weight", cout, cout, 3, 3), p(f"{prefix}.conv2.bias", cout)
        if cin != cout:
            p(f"{prefix}.nin_shortcut.weight", cout, cin, 1, 1), p(f"{prefix}.nin_shortcut.bias", cout)

    def mid(prefix, c):
        res(f"{prefix}.mid.block_1", c, c)
        p(f"{prefix}.mid.attn_1.norm.weight", c), p(f"{prefix}.mid.attn_1.norm.bias", c)
        for n in ("q", "k", "v", "proj_out"):
            p(f"{prefix}.mid.attn_1.{n}.weight", c, c, 1, 1), p(f"{prefix}.mid.attn_1.{n}.bias", c)
        res(f"{prefix}.mid.block_2", c, c)

    p("encoder.conv_in.weight", ch, 1, 3, 3), p("encoder.conv_in.bias", ch)
    cin = ch
    for i, m in enumerate(mult):
        for j in range(nrb):
            res(f"encoder.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
        if i != len(mult) - 1:
            p(f"encoder.down.{i}.downsample.conv.weight", cin, cin, 3, 3), p(f"encoder.down.{i}.downsample.conv.bias", cin)
    mid("encoder", cin)
    p("encoder.norm_out.weight", cin), p("encoder.norm_out.bias", cin)
    p("encoder.conv_out.weight", 2 * z, cin, 3, 3), p("encoder.conv_out.bias", 2 * z)
    p("quant_conv.weight", 2 * z, 2 * z, 1, 1), p("quant_conv.bias", 2 * z)
    p("post_quant_conv.weight", z, z, 1, 1), p("post_quant_conv.bias", z)
    cin = ch * mult[-1]
    p("decoder.conv_in.weight", cin, z, 3, 3), p("decoder.conv_in.bias", cin)
    mid("decoder", cin)
    for i in reversed(range(len(mult))):
        for j in range(nrb + 1):
            res(f"decoder.up.{i}.block.{j}", cin, ch * mult[i])
            cin = ch * mult[i]
        if i != 0:
            p(f"decoder.up.{i}.upsample.conv.weight", cin, cin, 3, 3), p(f"decoder.up.{i}.upsample.conv.bias", cin)
    p("decoder.norm_out.weight", cin), p("decoder.norm_out.bias", cin)
    p("decoder.conv_out.weight", 1, cin, 3, 3), p("decoder.conv_out.bias", 1)
    return sd


# -- original HiFi-GAN (jik876), weight-normed ------------------------------------------------
HIFI = dict(rates=[5, 4, 2, 2, 2], kernels=[16, 16, 8, 4, 4], res_kernels=[3, 7, 11], dilations=[1, 3, 5])


def hifigan_state(*, mels=64, ch=32, seed=2) -> dict:
    """``hifigan-ckpt.ckpt["generator"]``: every conv weight-normed (weight_g / weight_v)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def wn(name, *shape):
        sd[f"{name}.weight_g"] = (_rand((shape[0],) + (1,) * (len(shape) - 1), g, 0.1).abs() + 0.2)
        sd[f"{name}.weight_v"] = _rand(shape, g, 1.0)
        sd[f"{name}.bias"] = _rand((shape[1] if name.startswith("ups") else shape[0],), g, 0.05)

    wn("conv_pre", ch, mels, 7)
    c = ch
    for i, k in enumerate(HIFI["kernels"]):
        wn(f"ups.{i}", c, c // 2, k)
        c //= 2
        for j, rk in enumerate(HIFI["res_kernels"]):
            for n in range(3):
                wn(f"resblocks.{i * 3 + j}.convs1.{n}", c, c, rk)
                wn(f"resblocks.{i * 3 + j}.convs2.{n}", c, c, rk)
    wn("conv_post", 1, c, 7)
    return sd


def hifigan_reference(sd, mel):
    """The original Generator.forward, weight norm applied on the fly; mel is ``[B, mels, frames]``."""

    def w(name):
        v, g = sd[f"{name}.weight_v"], sd[f"{name}.weight_g"]
        return g * v / v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.ndim - 1)))

    x = F.conv1d(mel, w("conv_pre"), sd["conv_pre.bias"], padding=3)
    for i, (u, k) in enumerate(zip(HIFI["rates"], HIFI["kernels"])):
        x = F.conv_transpose1d(F.leaky_relu(x, 0.1), w(f"ups.{i}"), sd[f"ups.{i}.bias"], stride=u, padding=(k - u) // 2)
        xs = 0
        for j, rk in enumerate(HIFI["res_kernels"]):
            r, name = x, f"resblocks.{i * 3 + j}"
            for n, d in enumerate(HIFI["dilations"]):
                t = F.conv1d(F.leaky_relu(r, 0.1), w(f"{name}.convs1.{n}"), sd[f"{name}.convs1.{n}.bias"],
                             dilation=d, padding=(rk * d - d) // 2)
                t = F.conv1d(F.leaky_relu(t, 0.1), w(f"{name}.convs2.{n}"), sd[f"{name}.convs2.{n}.bias"],
                             padding=(rk - 1) // 2)
                r = r + t
            xs = xs + r
        x = xs / len(HIFI["res_kernels"])
    x = F.conv1d(F.leaky_relu(x), w("conv_post"), sd["conv_post.bias"], padding=3)
    return torch.tanh(x)


# -- LAION CLAP (HTSAT audio + RoBERTa text), unfused -----------------------------------------
def tiny_hf_clap(proj_dim=24):
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig

    audio = ClapAudioConfig(num_mel_bins=64, window_size=8, spec_size=256, patch_size=4, patch_stride=[4, 4],
                            hidden_size=16, patch_embeds_hidden_size=8, projection_dim=proj_dim, depths=[1, 1],
                            num_attention_heads=[2, 2], num_hidden_layers=2, projection_hidden_act="relu")
    text = ClapTextConfig(vocab_size=262, hidden_size=64, projection_dim=proj_dim, num_hidden_layers=1,
                          num_attention_heads=1, intermediate_size=32, max_position_embeddings=130,
                          projection_hidden_act="relu")
    torch.manual_seed(3)
    return ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=proj_dim)).eval()


_HF_TO_LAION = [
    (r"text_model\.embeddings\.token_type_ids", None),
    (r"text_model\.(.+)", r"text_branch.\1"),
    (r"(audio|text)_projection\.linear1\.(.+)", r"\1_projection.0.\2"),
    (r"(audio|text)_projection\.linear2\.(.+)", r"\1_projection.2.\2"),
    (r"audio_model\.audio_encoder\.batch_norm\.(.+)", r"audio_branch.bn0.\1"),
    (r"audio_model\.audio_encoder\.(.+)\.layernorm_before\.(.+)", r"audio_branch.\1.norm1.\2"),
    (r"audio_model\.audio_encoder\.(.+)\.layernorm_after\.(.+)", r"audio_branch.\1.norm2.\2"),
    (r"audio_model\.audio_encoder\.(.+)\.attention\.output\.dense\.(.+)", r"audio_branch.\1.attn.proj.\2"),
    (r"audio_model\.audio_encoder\.(.+)\.attention\.self\.(relative_position_\w+)", r"audio_branch.\1.attn.\2"),
    (r"audio_model\.audio_encoder\.(.+)\.intermediate\.dense\.(.+)", r"audio_branch.\1.mlp.fc1.\2"),
    (r"audio_model\.audio_encoder\.(.+blocks\.\d+)\.output\.dense\.(.+)", r"audio_branch.\1.mlp.fc2.\2"),
    (r"audio_model\.audio_encoder\.(.+)", r"audio_branch.\1"),
    (r"(logit_scale_[at])", r"\1"),
]


def laion_clap_state(model) -> dict:
    """The LAION state dict a ClapModel came from (fused qkv, LAION names, plus LAION-only keys)."""
    hf = model.state_dict()
    sd = {}
    for k, v in hf.items():
        m = re.fullmatch(r"(audio_model\.audio_encoder\..+)\.attention\.self\.(query|key|value)\.(weight|bias)", k)
        if m:
            if m.group(2) == "query":
                base = f"{m.group(1)}.attention.self"
                fused = torch.cat([hf[f"{base}.{n}.{m.group(3)}"] for n in ("query", "key", "value")])
                sd[re.sub(r"^audio_model\.audio_encoder", "audio_branch", m.group(1)) + f".attn.qkv.{m.group(3)}"] = fused
            continue
        for pattern, template in _HF_TO_LAION:
            mm = re.fullmatch(pattern, k)
            if mm:
                if template is not None:
                    sd[mm.expand(template)] = v
                break
        else:
            raise KeyError(k)
    g = torch.Generator().manual_seed(4)
    sd["audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.randn(513, 1, 1024, generator=g)
    sd["audio_branch.logmel_extractor.melW"] = torch.rand(513, 64, generator=g)
    for i in range(2):
        sd[f"audio_branch.layers.{i}.blocks.0.attn_mask"] = torch.zeros(4, 16, 16)
    sd["audio_branch.tscam_conv.weight"] = torch.randn(527, 16, 2, 3, generator=g)
    sd["audio_branch.tscam_conv.bias"] = torch.randn(527, generator=g)
    sd["audio_branch.head.weight"] = torch.randn(527, 527, generator=g)
    sd["audio_branch.head.bias"] = torch.randn(527, generator=g)
    sd["audio_transform.sequential.0.weight"] = torch.randn(24, 24, generator=g)
    sd["text_transform.sequential.0.weight"] = torch.randn(24, 24, generator=g)
    return sd


def tokenizer_folder(folder: Path) -> Path:
    """A local RoBERTa tokenizer (byte-level, no merges): stands in for roberta-base offline."""
    from transformers import RobertaTokenizer

    from mtldm_cli.tiny import byte_level_vocab

    vocab, merges = byte_level_vocab(folder / "_v")
    RobertaTokenizer(str(vocab), str(merges), model_max_length=128).save_pretrained(folder)
    return folder


# -- the Lightning checkpoint and the release archive -----------------------------------------
def lightning_state(*, conditional=True, ema=True, with_vae=True, with_clap=True, seed=0) -> dict:
    from diffusers import DDIMScheduler

    unet = unet_state(cond_dim=24 if conditional else None, seed=seed)
    sd = {f"model.diffusion_model.{k}": v for k, v in unet.items()}
    if ema:
        sd |= {f"model_ema.diffusion_model{k.replace('.', '')}": v + 0.01 for k, v in unet.items()}
        sd |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(10, dtype=torch.int)}
    if with_vae:
        sd |= {f"first_stage_model.{k}": v for k, v in vae_state().items()}
        voc = hifigan_state()
        from mtldm_cli.convert import fold_weight_norm

        sd |= {f"first_stage_model.vocoder.{k}": v for k, v in fold_weight_norm(voc).items()}
        sd["first_stage_model.loss.logvar"] = torch.zeros(())
        sd["first_stage_model.loss.discriminator.main.0.weight"] = torch.zeros(4, 1, 4, 4)
    if conditional and with_clap:
        sd |= {f"cond_stage_model.model.{k}": v for k, v in laion_clap_state(tiny_hf_clap()).items()}
    betas = DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear").betas
    ac = torch.cumprod(1 - betas, 0)
    sd |= {"betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": torch.cat([torch.ones(1), ac[:-1]]),
           "sqrt_alphas_cumprod": ac.sqrt(), "logvar": torch.zeros(1000), "scale_factor": torch.tensor(0.8)}
    return sd


def write_release(folder: Path, name="4_stems_slakh_with_CALP", **kw) -> Path:
    """A ``.tar.gz`` laid out as the Zenodo release: ``<run>/checkpoints/last.ckpt``."""
    run = folder / f"2024-03-25T00-55-31_3_D_{name}_ch=192_3e-05_"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = {"state_dict": lightning_state(**kw), "epoch": 3, "global_step": 200000,
            "pytorch-lightning_version": "1.9.0", "hyper_parameters": {"num_stems": 4, "linear_start": 0.0015}}
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    archive = folder / f"{run.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(run, arcname=run.name)
    return archive
