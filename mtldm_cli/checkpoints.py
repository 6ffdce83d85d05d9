"""The checkpoint registry (``checkpoints.toml``) and the resolver that turns a model name into a folder.

A model spec is a local folder, a registry name, or a Hugging Face Hub repo id (``org/name``).
Hub downloads go through ``huggingface_hub`` (its cache, revisions and offline mode); URL archives
are cached under the mtldm cache and verified by sha256 before use.

The two source kinds that need model code, built-in models and official releases to convert, are
given by the caller as :class:`Makers` (``sources.py`` binds ours), so this module stays below them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .config import PIPELINE_FILE, PipelineConfig
from .errors import NAME_ONLY, ModelError, first_problem
from .names import check_stem_names, safe_component

HUB_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TRUE = {"1", "true", "yes", "on"}


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    builtin: str | None = None
    package: str | None = None  # a model folder shipped inside the package (mtldm_cli/models/NAME)
    hf: str | None = None
    revision: str | None = None
    subfolder: str | None = None
    url: str | None = None
    sha256: str | dict[str, str] | None = None
    components: dict[str, str] | None = None  # official format: URLs of files the main one may lack
    tokenizer: str | None = None  # official format: CLAP's RoBERTa tokenizer, "org/name@rev" or a folder

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("builtin", "package", "hf", "url") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("a source needs exactly one of builtin, package, hf, url")
        if self.package and not isinstance(self.sha256, dict):
            raise ValueError("a package source lists the sha256 of each of its files")
        if self.hf and not self.revision:
            raise ValueError("an hf source must pin a revision")
        if self.url and not isinstance(self.sha256, (str, type(None))):
            raise ValueError("a url source's sha256 is one hex digest")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("builtin", "package", "hf", "url") if getattr(self, k))

    def describe(self) -> str:
        if self.builtin:
            return f"built locally ({self.builtin})"
        if self.package:
            return f"shipped in the package ({self.package})"
        if self.hf:
            return f"hf:{self.hf}@{(self.revision or '')[:12]}" + (f"/{self.subfolder}" if self.subfolder else "")
        return self.url or ""


class AudioSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_rate: int
    segment_seconds: float
    stems: list[str]

    @field_validator("stems")
    @classmethod
    def _plain_names(cls, v: list[str]) -> list[str]:
        check_stem_names(v)
        return v


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    format: Literal["mtldm", "mt-musicldm"]
    source: Source
    audio: AudioSummary
    conditioning: Literal["clap", "none"] | None = None  # known before a download; None: read from the model
    override: bool = False  # an extra registry's entry may replace a built-in one only when it says so

    def describe(self) -> str:
        return self.source.describe() + (" (overrides the built-in entry)" if self.override else "")

    @model_validator(mode="after")
    def _checked(self):
        # Our archives must be pinned by digest. Official checkpoints without a published digest are
        # read with torch.load(weights_only=True), which cannot run code; their digest is recorded.
        if self.source.url and self.format == "mtldm" and not self.source.sha256:
            raise ValueError("a url source needs its sha256")
        if self.format == "mt-musicldm" and not self.source.url:
            raise ValueError("format mt-musicldm needs a url source (the official .tar.gz)")
        return self


@dataclass(frozen=True)
class ModelSummary:
    """What a model is, known without building, downloading or loading it: its stems and whether
    it takes a prompt or a reference (``conditioning`` None when only the model itself can tell)."""

    name: str
    stems: tuple[str, ...]
    conditioning: str | None


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str
    source: str
    revision: str | None = None


@dataclass(frozen=True)
class Builtin:
    """A model built locally: ``build(folder)`` writes it; a new ``version`` builds it again."""

    build: Callable[[Path], object]
    version: int


# convert(archive, out, *, name, fetch, progress, provenance, **extra): an official release -> our layout
Converter = Callable[..., object]


@dataclass(frozen=True)
class Makers:
    builtins: Mapping[str, Builtin] = field(default_factory=dict)
    convert: Converter | None = None


# -- where things live --------------------------------------------------------------------------
def cache_root() -> Path:
    return Path(os.environ.get("MTLDM_CACHE") or Path.home() / ".cache" / "mtldm")


@contextmanager
def cache_lock(root: Path, key: str, progress=None) -> Iterator[None]:
    """Hold the cache's lock on ``key`` (a download, an extraction, a build, a conversion): processes
    that fetch the same model into one cache wait for each other instead of sharing half-written files."""
    from filelock import FileLock, Timeout

    path = Path(root) / "locks" / f"{safe_component(key, 'lock')}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if progress:
            progress(f"waiting for another process to finish {key}")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def is_offline(offline: bool | None = None) -> bool:
    if offline is not None:
        return offline
    return any(os.environ.get(v, "").lower() in TRUE for v in ("MTLDM_OFFLINE", "HF_HUB_OFFLINE"))


def registry_files() -> list[Path]:
    here = Path(__file__).resolve().parent
    packaged = here / "checkpoints.toml"
    files = [packaged if packaged.is_file() else here.parent / "checkpoints.toml"]
    extra = os.environ.get("MTLDM_REGISTRY", "")
    files += [Path(p) for p in extra.split(os.pathsep) if p]
    return files


def load_registry() -> dict[str, Entry]:
    """Every registry file's entries. The package's own file comes first; an extra file (``MTLDM_REGISTRY``)
    may add names, and may replace a built-in name only with ``override = true`` in that entry."""
    entries: dict[str, Entry] = {}
    builtin: set[str] = set()
    for i, path in enumerate(registry_files()):
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{path}: registry file not found", "fix MTLDM_REGISTRY") from None
        except tomllib.TOMLDecodeError as e:
            raise ModelError(f"{path}: not valid TOML ({e})", "fix the registry file") from None
        for name, raw in data.get("models", {}).items():
            try:
                entry = Entry(name=name, **raw)
            except ValidationError as e:
                raise ModelError(f"{path}: entry '{name}' is invalid ({first_problem(e)})", "fix the registry file") from None
            if name in builtin and not entry.override:
                raise ModelError(f"{path}: entry '{name}' would replace the built-in model '{name}'",
                                 "give it another name, or add override = true to the entry")
            entries[name] = entry
        if i == 0:
            builtin = set(entries)
    return entries


def path_like(spec: str) -> bool:
    """A model spec that can only mean a folder: it has a separator or starts with '.' or '~'."""
    return "/" in spec or os.sep in spec or spec.startswith((".", "~"))


# -- resolution ---------------------------------------------------------------------------------
def resolve_model(
    spec: str,
    *,
    revision: str | None = None,
    offline: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
    makers: Makers = Makers(),
) -> ResolvedModel:
    """Find (building, downloading or converting when needed) the folder holding model ``spec``."""
    offline = is_offline(offline)
    local = Path(spec).expanduser()
    registry: dict[str, Entry] = {} if path_like(spec) else load_registry()  # a bare name is a registry name first, a folder after
    if spec not in registry and local.is_dir():
        return ResolvedModel(check_model_dir(local, spec), name=local.name, source=f"local:{local.resolve()}")
    if spec in registry:
        entry = registry[spec]
        src = entry.source
        if src.builtin:
            path = _builtin(src.builtin, makers, cache_dir, progress)
        elif src.package and isinstance(src.sha256, dict):
            path = _packaged(src.package, src.sha256)
        elif src.hf:
            path = _from_hub(src.hf, revision or src.revision, src.subfolder, offline, cache_dir, src.sha256, progress)
        elif entry.format == "mt-musicldm":
            path = _from_official(entry, makers, offline, cache_dir, progress)
        elif src.url and isinstance(src.sha256, str):
            path = _from_url(src.url, src.sha256, offline, cache_dir, progress)
        else:  # the entry validators make this unreachable
            raise ModelError(f"model '{spec}': registry entry has no usable source", "fix the registry file")
        path = check_model_dir(path, spec)
        _check_audio(entry, path)
        return ResolvedModel(path, name=spec, source=entry.describe(), revision=revision or src.revision)
    if HUB_REPO_RE.match(spec) and not spec.startswith((".", "/", "~")):
        rev = revision or "main"
        path = check_model_dir(_from_hub(spec, rev, None, offline, cache_dir, None, progress), spec)
        return ResolvedModel(path, name=spec, source=f"hf:{spec}@{rev}", revision=rev)
    if path_like(spec):
        raise ModelError(f"model folder '{spec}' does not exist", "check the path")
    known = ", ".join(sorted(registry)) or "none"
    raise ModelError(
        f"unknown model '{spec}': not a folder, a registry name or a hub repo id",
        f"registry names: {known} (see `mtldm models`)",
    )


def describe_model(spec: str) -> ModelSummary | None:
    """The registry entry's or a local folder's summary of ``spec``, read as :func:`resolve_model` would
    find it; None for a hub repo id or anything not there yet. Never raises for what resolution reports."""
    local = Path(spec).expanduser()
    try:
        registry = {} if path_like(spec) else load_registry()
    except ModelError:
        return None
    if spec in registry:
        entry = registry[spec]
        return ModelSummary(spec, tuple(entry.audio.stems), entry.conditioning)
    if local.is_dir() and (local / PIPELINE_FILE).is_file():
        try:
            config = PipelineConfig.model_validate_json((local / PIPELINE_FILE).read_text())
        except (OSError, ValueError):  # loading the model says what is wrong
            return None
        return ModelSummary(local.name, config.audio.stems, config.conditioning)
    return None


def check_model_dir(path: Path, spec: str) -> Path:
    if not (path / PIPELINE_FILE).is_file():
        raise ModelError(f"model '{spec}' ({path}) has no {PIPELINE_FILE}", "it is not an mtldm model folder")
    return path


def _check_audio(entry: Entry, path: Path) -> None:
    import json

    config = json.loads((path / PIPELINE_FILE).read_text())
    audio = config.get("audio", {})
    if audio.get("sample_rate", 16000) != entry.audio.sample_rate or list(
        audio.get("stems", entry.audio.stems)
    ) != list(entry.audio.stems) or entry.conditioning not in (None, config.get("conditioning", "clap")):
        raise ModelError(
            f"model '{entry.name}' does not match its registry entry (sample rate, stems or conditioning differ)",
            "the registry entry or the download is wrong; clear the cache and retry",
        )


def _builtin_folder(name: str, builtin: Builtin, cache_dir) -> Path:
    return Path(cache_dir or cache_root()) / "builtin" / f"{name}-v{builtin.version}"


def _builtin(name: str, makers: Makers, cache_dir, progress) -> Path:
    if name not in makers.builtins:
        raise ModelError(f"unknown builtin model '{name}'", f"builtins: {', '.join(makers.builtins) or 'none'}")
    builtin = makers.builtins[name]
    folder = _builtin_folder(name, builtin, cache_dir)
    if (folder / PIPELINE_FILE).is_file():
        return folder
    with cache_lock(Path(cache_dir or cache_root()), folder.name, progress):
        if (folder / PIPELINE_FILE).is_file():  # another process built it while this one waited
            return folder
        if progress:
            progress(f"building {name} (once)")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
        try:
            builtin.build(tmp)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def packaged_root() -> Path:
    return Path(__file__).resolve().parent / "models"


def _packaged(name: str, sha256: dict[str, str]) -> Path:
    """A model folder inside the installed package, checked file by file against the registry."""
    folder = packaged_root() / name
    if not folder.is_dir():
        raise ModelError(f"packaged model '{name}' is missing from {folder.parent}", "reinstall mtldm")
    for rel, digest in sha256.items():
        verify_sha256(folder / rel, digest)
    return folder


def _from_hub(repo_id, revision, subfolder, offline, cache_dir, sha256, progress) -> Path:
    import huggingface_hub as hub
    from huggingface_hub import errors as E

    if progress:
        progress(f"fetching {repo_id}@{revision}" + (" (offline)" if offline else ""))
    try:
        root = hub.snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
            allow_patterns=[f"{subfolder}/*"] if subfolder else None, library_name="mtldm",
        )
    except E.GatedRepoError:
        raise ModelError(f"{repo_id} is gated", "accept its terms on the hub and log in (`hf auth login`)") from None
    except E.RepositoryNotFoundError:
        raise ModelError(f"{repo_id}: no such repository on the hub (or it is private)",
                         "check the name, or log in if it is private") from None
    except E.RevisionNotFoundError:
        raise ModelError(f"{repo_id}: revision '{revision}' not found", "check the revision") from None
    except (E.LocalEntryNotFoundError, E.OfflineModeIsEnabled):
        if offline:
            raise ModelError(f"{repo_id}@{revision} is not in the cache and offline mode is on",
                             "run once online (unset MTLDM_OFFLINE / HF_HUB_OFFLINE, drop {offline})",
                             offline=NAME_ONLY) from None
        raise ModelError(f"{repo_id}: cannot reach the hub", "check the network, or use {offline} with a cached model",
                         offline=NAME_ONLY) from None
    except E.HfHubHTTPError as e:
        raise ModelError(f"{repo_id}: the hub answered with an error ({str(e).splitlines()[0]})", "retry later") from None
    except OSError as e:
        raise ModelError(f"{repo_id}: download failed ({e})", "check the network and disk space") from None
    path = Path(root) / subfolder if subfolder else Path(root)
    if isinstance(sha256, dict):
        for rel, digest in sha256.items():
            verify_sha256(path / rel, digest)
    return path


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _download(url: str, sha256: str | None, offline: bool, root: Path, progress, by_hand: str | None = None) -> Path:
    """Fetch ``url`` once into the cache; verified by ``sha256`` when one is known. Says its size and
    how far it is (every few seconds, through ``progress``); ``by_hand`` says how to do without it."""
    key = sha256[:16] if sha256 else "url-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    name = safe_component(urllib.parse.unquote(url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]), "download")
    archive = root / "downloads" / key / name
    by_hand = by_hand or "download it by hand and give its folder as the model"
    with cache_lock(root, f"download-{key}", progress):
        if not archive.is_file():
            if offline:
                raise ModelError(f"{url} is not in the cache and offline mode is on", f"run once online, or {by_hand}")
            archive.parent.mkdir(parents=True, exist_ok=True)
            tmp = archive.with_name(f"{archive.name}.{os.getpid()}.part")
            try:
                with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                    _copy_reporting(r, f, name, url, by_hand, progress)
            except (urllib.error.URLError, OSError) as e:
                tmp.unlink(missing_ok=True)
                reason = getattr(e, "reason", e)
                raise ModelError(f"{url}: download failed ({reason})", f"check the network, or {by_hand}") from None
            tmp.replace(archive)
        if sha256:
            try:
                verify_sha256(archive, sha256)
            except ModelError:
                archive.unlink(missing_ok=True)
                raise
    return archive


def _copy_reporting(src, dst, name: str, url: str, by_hand: str, progress, every_s: float = 5.0) -> None:
    total = int(src.headers.get("Content-Length") or 0) or None
    if progress:
        progress(f"downloading {name} ({human_size(total) if total else 'size unknown'}) from {url}; "
                 f"to do it yourself instead: {by_hand}")
    done, started = 0, time.monotonic()
    last = started
    while chunk := src.read(1 << 20):
        dst.write(chunk)
        done += len(chunk)
        now = time.monotonic()
        if progress and (now - last >= every_s or done == total):
            last = now
            share = f" of {human_size(total)} ({100 * done / total:.0f}%)" if total else ""
            progress(f"{name}: {human_size(done)}{share}, {human_size(done / max(now - started, 1e-3))}/s")


def _from_url(url: str, sha256: str, offline: bool, cache_dir, progress) -> Path:
    root = Path(cache_dir or cache_root())
    target = root / "models" / sha256[:16]
    if (target / PIPELINE_FILE).is_file():
        return target
    by_hand = f"fetch {url}, extract it and give the folder holding pipeline.json as the model"
    archive = _download(url, sha256, offline, root, progress, by_hand)
    with cache_lock(root, f"model-{target.name}", progress):
        if (target / PIPELINE_FILE).is_file():  # another process extracted it while this one waited
            return target
        tmp_dir = Path(tempfile.mkdtemp(prefix=".extract.", dir=archive.parent))
        try:
            _extract(archive, tmp_dir)
            inner = [p for p in tmp_dir.iterdir()]
            src = inner[0] if len(inner) == 1 and inner[0].is_dir() else tmp_dir
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(src), target)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def official_cache_dir(entry: Entry, cache_dir=None) -> Path:
    digest = hashlib.sha256((entry.source.url or "").encode()).hexdigest()[:12]
    return Path(cache_dir or cache_root()) / "converted" / f"{entry.name}-{digest}"


def _from_official(entry: Entry, makers: Makers, offline: bool, cache_dir, progress) -> Path:
    """Download the authors' release (and, when needed, the component files) and convert it once."""
    if makers.convert is None:
        raise ModelError(f"model '{entry.name}' is an official release, and no converter was given",
                         "resolve it through mtldm_cli.sources")
    target = official_cache_dir(entry, cache_dir)
    if (target / PIPELINE_FILE).is_file():
        return target
    root = Path(cache_dir or cache_root())
    with cache_lock(root, f"converted-{target.name}", progress):
        if (target / PIPELINE_FILE).is_file():  # another process converted it while this one waited
            return target
        return _convert_official(entry, makers.convert, offline, root, target, progress)


def _convert_official(entry: Entry, convert: Converter, offline: bool, root: Path, target: Path, progress) -> Path:
    src = entry.source
    if not src.url or isinstance(src.sha256, dict):
        raise ModelError(f"model '{entry.name}': an official release needs a url and at most one sha256")
    flags = {"vae": "--vae", "vocoder": "--vocoder", "clap": "--clap"}
    parts = " ".join(f"{flags[p]} <{p} file>" for p in (src.components or {}) if p in flags)
    by_hand = (f"fetch {src.url} (and, if the release lacks them, the files its registry entry lists as components) "
               f"and run `mtldm convert <release> {parts} --out DIR`, then use --model DIR").replace("  ", " ")
    archive = _download(src.url, src.sha256, offline, root, progress, by_hand)
    extra = src.components or {}

    def fetch(part: str) -> Path:
        if part not in extra:
            raise ModelError(f"{entry.name}: the release lacks the {part} weights and the registry names no file for them",
                             "add a components URL to the registry entry")
        return _download(extra[part], None, offline, root, progress, by_hand)

    if progress:
        progress(f"converting {archive.name} (once)")
    kwargs = {"tokenizer": src.tokenizer} if src.tokenizer else {}
    provenance = {"url": src.url, "sha256": sha256_file(archive)}
    convert(archive, target, name=entry.name, fetch=fetch, progress=progress, provenance=provenance, **kwargs)
    return target


def _extract(archive: Path, dest: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(dest)
        else:
            with tarfile.open(archive) as t:
                t.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"{archive}: not a valid model archive ({e})", "clear the cache and retry") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def store_half(folder: str | Path) -> int:
    """Rewrite every ``*.safetensors`` under ``folder`` with its floating-point tensors in float16
    (metadata kept), halving what a shipped model weighs; the loaders (diffusers', transformers', ours)
    build float32 modules and copy the weights into them, so it still computes in float32. Returns
    the bytes saved. All files or none are rewritten; a weight float16 cannot hold (beyond +-65504)
    is a ``ValueError``, before any file is changed."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save

    from .audio import bytes_writer, write_file_set

    halves: dict[Path, bytes] = {}
    for path in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {}
        for name, t in tensors.items():
            if t.is_floating_point() and t.numel() and float(t.abs().max()) > torch.finfo(torch.float16).max:
                raise ValueError(f"{path}: {name} holds values beyond float16's range")
        halves[path] = save({k: (t.half() if t.is_floating_point() else t).contiguous() for k, t in tensors.items()},
                            metadata=metadata)
    before = sum(path.stat().st_size for path in halves)
    write_file_set({path: bytes_writer(data) for path, data in halves.items()})
    return before - sum(len(data) for data in halves.values())


def verify_sha256(path: Path, expected: str) -> None:
    if not path.is_file():
        raise ModelError(f"{path}: expected file is missing", "the download is incomplete; clear the cache and retry")
    got = sha256_file(path)
    if got.lower() != expected.lower():
        raise ModelError(
            f"{path.name}: sha256 mismatch (expected {expected[:12]}..., got {got[:12]}...)",
            "the file is corrupt or the registry is wrong; it was not used",
        )


def is_cached(entry: Entry, cache_dir=None, makers: Makers = Makers()) -> bool:
    """Whether ``entry`` would resolve without network."""
    try:
        src = entry.source
        if src.builtin:
            builtin = makers.builtins.get(src.builtin)
            return builtin is not None and (_builtin_folder(src.builtin, builtin, cache_dir) / PIPELINE_FILE).is_file()
        if src.package:
            return (packaged_root() / src.package / PIPELINE_FILE).is_file()
        if entry.format == "mt-musicldm":
            return (official_cache_dir(entry, cache_dir) / PIPELINE_FILE).is_file()
        if src.url and isinstance(src.sha256, str):
            return (Path(cache_dir or cache_root()) / "models" / src.sha256[:16] / PIPELINE_FILE).is_file()
        if src.hf:
            _from_hub(src.hf, src.revision, src.subfolder, True, cache_dir, None, None)
            return True
        return False
    except ModelError:
        return False
