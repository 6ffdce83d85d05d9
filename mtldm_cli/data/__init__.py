"""Multi-track data: a Slakh-like synthetic dataset we make ourselves, and loaders for stem folders."""
