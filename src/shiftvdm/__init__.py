"""shiftvdm: SHIFT motion alignment for image-conditioned video diffusion models (arXiv 2603.17426)."""

__version__ = "0.1.0"
