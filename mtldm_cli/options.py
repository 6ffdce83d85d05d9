"""The options of one run, resolved once (as whisper's ``DecodingOptions``): the model's defaults,
then a preset, then the caller's overrides; validated, frozen, and recorded as they are in
``run.json``. Nothing downstream picks a default again.
"""

from __future__ import annotations

import math
import secrets
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .config import PRESETS, Method, Preset, Sampler, SamplingDefaults
from .errors import InputError

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    PLACEHOLDERS: ClassVar[dict[str, Any]] = {}  # valid values for the fields a model supplies

    @field_validator("*")
    @classmethod
    def _finite(cls, v):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @classmethod
    def _build(cls, values: dict[str, Any]):
        try:
            return cls(**values)
        except ValidationError as e:
            err = e.errors()[0]
            name = str(err["loc"][0]) if err["loc"] else "options"
            reason = err["msg"].removeprefix("Value error, ")
            raise InputError(f"{{{name}}}: {reason[:1].lower()}{reason[1:]}", **{name: values.get(name)}) from None

    @classmethod
    def check_given(cls, **given: Any) -> None:
        """Validate the values a caller gave, each on its own, before a model is at hand (one that is
        supplies the rest, and the checks between fields, in ``resolve``)."""
        cls._build(cls.PLACEHOLDERS | {k: v for k, v in given.items() if v is not None})

    def record(self) -> dict[str, Any]:
        """What ``run.json`` stores: every field, as resolved."""
        return self.model_dump()


def _seed(seed: int | None) -> int:
    return secrets.randbelow(2**31) if seed is None else seed


ARRANGE_OFF: dict[str, float] = {"resample": 1, "reconstruction": 0.0, "given_guidance": 1.0}  # the arrangement-only settings, off


class SamplingOptions(_Options):
    """How generate, condition and arrange sample: sampler, steps, DDIM eta, guidance and seed."""

    PLACEHOLDERS: ClassVar[dict[str, Any]] = {"sampler": "ddim", "steps": 1, "eta": 0.0, "guidance": 0.0, "seed": 0}

    sampler: Sampler
    steps: int = Field(ge=1)
    eta: float = Field(ge=0.0, le=1.0)  # DDIM only
    guidance: float = Field(ge=0.0)
    seed: int = Field(ge=0, le=MAX_SEED)
    preset: Preset | None = None
    # arrangement only: RePaint's resampling (each step made `resample` times, re-noised between:
    # DDIM only) and reconstruction guidance (Ho et al.: the unknown stems pulled by the gradient of
    # the given stems' reconstruction error, weight `reconstruction`)
    resample: int = Field(1, ge=1, le=20)
    reconstruction: float = Field(0.0, ge=0.0)
    # and, for an arrangement-trained UNet, guidance by the given stems (1: none; samplers.cfg_model_fn)
    given_guidance: float = Field(1.0, ge=0.0, le=20.0)

    @classmethod
    def resolve(cls, defaults: SamplingDefaults, *, task: str = "generate", preset: str | None = None,
                sampler: str | None = None, steps: int | None = None, eta: float | None = None,
                guidance: float | None = None, seed: int | None = None, resample: int | None = None,
                reconstruction: float | None = None, given_guidance: float | None = None) -> SamplingOptions:
        """``defaults`` (a model's), then ``preset``, then every value given explicitly.

        ``task`` "arrange" takes the model's arrangement sampler (unless a preset names one), guidance,
        resampling (when it samples with ddim), reconstruction and given-stem guidance as its
        defaults; the other tasks refuse the last three.
        """
        base = defaults.model_dump()
        if preset is not None:
            if preset not in PRESETS:
                raise InputError(f"{{preset}}: unknown preset; use one of: {', '.join(PRESETS)}", preset=preset)
            base |= PRESETS[preset]
        values = {k: base[k] for k in ("sampler", "steps", "eta")}
        values["guidance"] = base["arrange_guidance"] if task == "arrange" else base["guidance"]
        if task == "arrange":
            if base["arrange_sampler"] and preset is None:
                values["sampler"] = base["arrange_sampler"]
            values |= {k: base[f"arrange_{k}"] for k in ARRANGE_OFF}
        else:
            steering: dict[str, Any] = {k: v for k, v in dict(resample=resample, reconstruction=reconstruction,
                                                              given_guidance=given_guidance).items()
                                        if v not in (None, ARRANGE_OFF[k])}
            if steering:
                names = " and ".join(f"{{{k}}}" for k in steering)
                raise InputError(f"{names} steer{'s' * (len(steering) == 1)} an arrangement: only arrange takes "
                                 f"{'it' if len(steering) == 1 else 'them'}", **steering)
        given = dict(sampler=sampler, steps=steps, eta=eta, guidance=guidance, resample=resample,
                     reconstruction=reconstruction, given_guidance=given_guidance)
        values |= {k: v for k, v in given.items() if v is not None}
        if task == "arrange" and values["sampler"] != "ddim" and resample is None:
            values["resample"] = ARRANGE_OFF["resample"]  # the model's RePaint default applies to ddim only
        opts = cls._build(values | {"seed": _seed(seed), "preset": preset})
        if opts.resample > 1 and opts.sampler != "ddim":
            raise InputError("{resample}: RePaint resampling needs the ddim sampler (DPM-Solver++ is multistep)",
                             "add {sampler}", resample=opts.resample, sampler="ddim")
        return opts


class SeparationOptions(_Options):
    """How ``separate`` samples: MSDM's Euler sampler with churn, the posterior method, Wiener.

    Defaults are MSDM's (s_churn 20, 2 resamples, sigmas 1e-4..1, gamma 0.75 sigma, the last stem
    pinned by dirac); steps default to the model's ``separate_steps``.
    """

    PLACEHOLDERS: ClassVar[dict[str, Any]] = {"steps": 1, "seed": 0}

    method: Method = "dirac"
    steps: int = Field(ge=1)
    s_churn: float = Field(20.0, ge=0.0)
    resamples: int = Field(2, ge=1)
    sigma_min: float = Field(1e-4, gt=0.0)
    sigma_max: float = Field(1.0, gt=0.0)
    gamma: float = Field(0.75, gt=0.0)  # gaussian and consistency: likelihood width / sigma
    source: int = -1  # dirac: index of the stem pinned to the mixture constraint
    consistency: float = Field(1.0, ge=0.0)  # consistency: strength of the mel-domain gradient
    wiener: bool = True
    chunk_batch: int = Field(4, ge=1, le=64)  # chunks of a long mixture sampled at once (one batch)
    seed: int = Field(ge=0, le=MAX_SEED)

    @classmethod
    def resolve(cls, defaults: SamplingDefaults, **overrides: Any) -> SeparationOptions:
        """The model's ``separate_steps`` and the class defaults, then every value not None."""
        given = {k: v for k, v in overrides.items() if v is not None}
        values = {"steps": defaults.separate_steps} | given
        opts = cls._build(values | {"seed": _seed(given.get("seed"))})
        if not opts.sigma_min < opts.sigma_max:
            raise InputError("{sigma_min} and {sigma_max}: the smallest noise level must be below the largest",
                             sigma_min=opts.sigma_min, sigma_max=opts.sigma_max)
        return opts

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's default, for help texts that show it."""
        return cls.model_fields[name].default
