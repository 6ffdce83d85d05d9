"""mtldm: Multi-Track MusicLDM — generate, arrange and separate bass, drums, guitar and piano stems."""

from .version import __version__

__all__ = ["MultiTrackOutput", "MultiTrackPipeline", "SamplingOptions", "SeparationOptions", "__version__"]


def __getattr__(name):
    # torch loads only when the pipeline is used, so `mtldm --help` stays fast.
    if name in ("MultiTrackPipeline", "MultiTrackOutput"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("SamplingOptions", "SeparationOptions"):
        from . import options

        return getattr(options, name)
    raise AttributeError(name)
