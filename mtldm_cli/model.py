"""The multi-track UNet: MT-MusicLDM's LDM "openaimodel" UNet with ``dims=3``.

Input and output are ``[B, S, C, T, F]`` (stems, latent channels, latent frames, latent mel bins):
Conv3d treats S as channels and convolves over (C, T, F), so the stems exchange information through
every convolution and attention layer. Downsampling halves T and F only (stride (1, 2, 2)); the
latent-channel depth C is kept.

Module names, shapes and numerics follow the official ``model.diffusion_model.*`` state dict, so a
converted checkpoint loads with ``strict=True`` and no renaming (see ``convert.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from .weights import SafetensorsLayout


class UNetConfig(BaseModel):
    """Defaults are the published full-size model ("4_stems_slakh_with_CALP_ch=192")."""

    model_config = ConfigDict(extra="forbid")

    stems: int = 4
    latent_channels: int = 8
    model_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 2, 3, 5)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (8, 4, 2)
    num_head_channels: int = 32
    cond_dim: int | None = 512
    norm_groups: int = 32
    dropout: float = 0.0
    # An arrangement-trained UNet (ours; the published one is not): its input also carries the given
    # stems' clean latents and their mask, so it conditions on them instead of only being imputed.
    arrangement: bool = False

    @property
    def downsample_factor(self) -> int:
        """Latent frames and bins must be multiples of this."""
        return 2 ** (len(self.channel_mult) - 1)


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's weights and bias: the block starts as the identity (LDM's zero_module)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype, as LDM does (stable in fp16/bf16)."""

    def forward(self, x):
        weight, bias = (None if v is None else v.float() for v in (self.weight, self.bias))
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).type(x.dtype)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(groups, cin), nn.SiLU(), nn.Conv3d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.out_layers = nn.Sequential(
            GroupNorm32(groups, cout), nn.SiLU(), nn.Dropout(dropout), _zero(nn.Conv3d(cout, cout, 3, padding=1))
        )
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv3d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Attention(nn.Module):
    """Self-attention over every (C, T, F) position, so all stems and frames see each other.

    The fused ``qkv`` projection is laid out head by head (``[head][q|k|v][channel]``), LDM's
    "legacy" order, so official weights need no reshuffling.
    """

    def __init__(self, ch: int, head_channels: int, groups: int):
        super().__init__()
        if ch % head_channels:
            raise ValueError(f"attention width {ch} is not a multiple of num_head_channels {head_channels}")
        self.heads = ch // head_channels
        self.norm = GroupNorm32(groups, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = _zero(nn.Conv1d(ch, ch, 1))

    def forward(self, x):
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))
        # SDPA's fused kernels need each head's channels contiguous; strided views fall back to the
        # math path, which holds every [positions x positions] score (5x slower on a CPU)
        q, k, v = qkv.reshape(b, self.heads, 3, c // self.heads, -1).permute(2, 0, 1, 4, 3).contiguous()
        h = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, -1)
        return x + self.proj_out(h).reshape(b, c, *spatial)


class Down(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.op = nn.Conv3d(ch, ch, 3, stride=(1, 2, 2), padding=1)

    def forward(self, x, emb=None):
        return self.op(x)


class Up(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv3d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


class Stage(nn.ModuleList):
    """A sequence of blocks, each fed the embedding when it takes one."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, Down, Up)) else layer(x)
        return x


class MultiTrackUNet(SafetensorsLayout, nn.Module):
    """Predicts the noise ``eps`` of every stem's latent, optionally given a CLAP embedding.

    The embedding is projected and concatenated to the timestep embedding (MT-MusicLDM's "film"
    conditioning), so the residual blocks see both.
    """

    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        mc, g = cfg.model_channels, cfg.norm_groups
        tdim = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.film_emb = nn.Linear(cfg.cond_dim, tdim) if cfg.cond_dim else None
        emb_dim = 2 * tdim if cfg.cond_dim else tdim

        def res(cin, cout):
            return ResBlock(cin, cout, emb_dim, g, cfg.dropout)

        self.input_blocks = nn.ModuleList([Stage([nn.Conv3d(cfg.stems * (3 if cfg.arrangement else 1), mc, 3, padding=1)])])
        skips, ch, ds = [mc], mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                stage = Stage([res(ch, mult * mc)])
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    stage.append(Attention(ch, cfg.num_head_channels, g))
                self.input_blocks.append(stage)
                skips.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(Stage([Down(ch)]))
                skips.append(ch)
                ds *= 2
        self.middle_block = Stage([res(ch, ch), Attention(ch, cfg.num_head_channels, g), res(ch, ch)])
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                stage = Stage([res(ch + skips.pop(), mult * mc)])
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    stage.append(Attention(ch, cfg.num_head_channels, g))
                if level and i == cfg.num_res_blocks:
                    stage.append(Up(ch))
                    ds //= 2
                self.output_blocks.append(stage)
        self.out = nn.Sequential(GroupNorm32(g, ch), nn.SiLU(), _zero(nn.Conv3d(ch, cfg.stems, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                given: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``given = (x0, mask)``: the known stems' clean latents and a mask broadcastable to ``x``
        (1 where known); only an arrangement UNet takes it, and without it generates every stem.
        Runs in the weights' precision and answers in ``x``'s."""
        in_dtype, dtype = x.dtype, next(self.time_embed.parameters()).dtype
        x = x.to(dtype)
        if self.config.arrangement:
            x0, mask = (torch.zeros_like(x), torch.zeros_like(x)) if given is None else given
            mask = mask.to(x).expand_as(x)
            x = torch.cat([x, x0.to(x) * mask, mask], dim=1)
        elif given is not None:
            raise ValueError("this UNet was not trained for arrangement: impute the given stems instead")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(dtype))
        if self.film_emb is not None:
            if cond is None:
                raise ValueError("this UNet is conditional: pass a conditioning embedding")
            emb = torch.cat([emb, self.film_emb(cond.to(dtype))], dim=-1)
        h, hs = x, []
        for stage in self.input_blocks:
            h = stage(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h).to(in_dtype)
