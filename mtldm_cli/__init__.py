"""mtldm: Multi-Track MusicLDM — generate, arrange and separate bass, drums, guitar and piano stems."""

__version__ = "0.1.0"

__all__ = ["MultiTrackPipeline", "MultiTrackOutput", "__version__"]


def __getattr__(name):
    # torch loads only when the pipeline is used, so `mtldm --help` stays fast.
    if name in ("MultiTrackPipeline", "MultiTrackOutput"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
