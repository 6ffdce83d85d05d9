"""The options of one run, resolved once (as whisper's ``DecodingOptions``): the model's defaults,
then a preset, then the caller's overrides; validated, frozen, and recorded as they are in
``run.json``. Nothing downstream picks a default again.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .config import PRESETS, Method, Preset, Sampler, SamplingDefaults
from .errors import InputError

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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

    def record(self) -> dict[str, Any]:
        """What ``run.json`` stores: every field, as resolved."""
        return self.model_dump()


def _seed(seed: int | None) -> int:
    return secrets.randbelow(2**31) if seed is None else seed


class SamplingOptions(_Options):
    """How generate, condition and arrange sample: sampler, steps, DDIM eta, guidance and seed."""

    sampler: Sampler
    steps: int = Field(ge=1)
    eta: float = Field(ge=0.0, le=1.0)  # DDIM only
    guidance: float = Field(ge=0.0)
    seed: int = Field(ge=0, le=MAX_SEED)
    preset: Preset | None = None

    @classmethod
    def resolve(cls, defaults: SamplingDefaults, *, task: str = "generate", preset: str | None = None,
                sampler: str | None = None, steps: int | None = None, eta: float | None = None,
                guidance: float | None = None, seed: int | None = None) -> SamplingOptions:
        """``defaults`` (a model's), then ``preset``, then every value given explicitly.

        ``task`` "arrange" takes the model's arrangement guidance as its default guidance.
        """
        base = defaults.model_dump()
        if preset is not None:
            if preset not in PRESETS:
                raise InputError(f"{{preset}}: unknown preset; use one of: {', '.join(PRESETS)}", preset=preset)
            base |= PRESETS[preset]
        values = {k: base[k] for k in ("sampler", "steps", "eta")}
        values["guidance"] = base["arrange_guidance"] if task == "arrange" else base["guidance"]
        given = dict(sampler=sampler, steps=steps, eta=eta, guidance=guidance)
        values |= {k: v for k, v in given.items() if v is not None}
        return cls._build(values | {"seed": _seed(seed), "preset": preset})


class SeparationOptions(_Options):
    """How ``separate`` samples: MSDM's Euler sampler with churn, the posterior method, Wiener.

    Defaults are MSDM's (s_churn 20, 2 resamples, sigmas 1e-4..1, gamma 0.75 sigma, the last stem
    pinned by dirac); steps default to the model's ``separate_steps``.
    """

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
