"""The tiny Wan presets now live in backbone/tiny.py (one module for every tiny preset); this name re-exports
them for existing imports."""

from shiftvdm.backbone.tiny import (  # noqa: F401
    LAYOUTS,
    build_tiny_tokenizer,
    save_tiny_wan,
    tiny_video_shape,
    tiny_wan_backbone,
    tiny_wan_components,
)
