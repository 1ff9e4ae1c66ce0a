"""Image codecs: where the DiT diffuses.

`pixel`: RGB pixels scaled to [-1, 1]; the patch size is chosen so the token grid is 8x8.
`vae:<dir>`: a diffusers AutoencoderKL loaded from a local folder; latents times its
scaling factor, patch size again chosen for an 8x8 grid (the paper: 128 px -> 4x16x16, patch 2).
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.core.errors import UserError

GRID = 8  # tokens per side, as in the paper


class PixelCodec:
    spec = "pixel"

    def __init__(self, res: int):
        if res % GRID:
            raise UserError(f"--res {res} is not a multiple of {GRID}; use 32, 64 or 128")
        self.res = res
        self.channels = 3
        self.latent_size = res
        self.patch_size = res // GRID

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """float [B, 3, H, W] -> uint8 [B, H, W, 3]."""
        x = latents.float().clamp(-1, 1).add(1).mul(127.5).round()
        return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def to(self, device):
        return self


class VAECodec:
    def __init__(self, directory: str, res: int):
        from diffusers import AutoencoderKL

        path = Path(directory)
        if not (path / "config.json").is_file():
            raise UserError(
                f"no AutoencoderKL at {directory!r} (config.json missing); give a local diffusers VAE folder"
            )
        try:
            self.vae = AutoencoderKL.from_pretrained(
                path, local_files_only=True, use_safetensors=True
            )
        except (OSError, ValueError) as e:
            raise UserError(
                f"cannot load the VAE in {directory!r}: {str(e).splitlines()[0]}"
            ) from None
        self.vae.requires_grad_(False).eval()
        self.spec = f"vae:{path.resolve()}"
        self.res = res
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.channels = self.vae.config.latent_channels
        self.latent_size = res // down
        if self.latent_size % GRID:
            raise UserError(
                f"--res {res} gives a {self.latent_size}px latent, not a multiple of {GRID}; change --res"
            )
        self.patch_size = self.latent_size // GRID
        self.scale = float(self.vae.config.scaling_factor)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(self.vae.device)
        return self.vae.encode(x).latent_dist.mode() * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode(latents.to(self.vae.device).float() / self.scale).sample
        return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()

    def to(self, device):
        self.vae.to(device)
        return self


def build_codec(spec: str, res: int):
    if spec == "pixel":
        return PixelCodec(res)
    if spec.startswith("vae:"):
        return VAECodec(spec[4:], res)
    raise UserError(f"unknown codec {spec!r}; use 'pixel' or 'vae:<local AutoencoderKL folder>'")
