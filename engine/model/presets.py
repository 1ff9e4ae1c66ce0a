"""The paper's model presets, as configurations of diffusers' PixArtTransformer2DModel.

We configure diffusers' model rather than copy it, so our checkpoints open in plain diffusers.
Epsilon prediction only (out_channels == in_channels): no learned variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.core.errors import UserError

if TYPE_CHECKING:  # diffusers (and torch) load only when a model is built: presets stay cheap
    from diffusers import PixArtTransformer2DModel


@dataclass(frozen=True)
class Preset:
    name: str
    layers: int
    heads: int
    width: int

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("dit-b", 12, 12, 768),
        Preset("mini", 6, 6, 384),
        Preset("micro", 6, 3, 192),
        Preset("nano", 3, 3, 192),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def build_transformer(
    preset: Preset, in_channels: int, sample_size: int, patch_size: int, caption_channels: int
) -> PixArtTransformer2DModel:
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel(
        num_attention_heads=preset.heads,
        attention_head_dim=preset.head_dim,
        in_channels=in_channels,
        out_channels=in_channels,
        num_layers=preset.layers,
        cross_attention_dim=preset.width,
        sample_size=sample_size,
        patch_size=patch_size,
        caption_channels=caption_channels,
        use_additional_conditions=False,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        num_embeds_ada_norm=1000,
        attention_bias=True,
        activation_fn="gelu-approximate",
    )
