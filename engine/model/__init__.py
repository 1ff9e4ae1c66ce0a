"""PixArt-style DiTs (diffusers PixArtTransformer2DModel), image codecs, checkpoints, sampling."""
