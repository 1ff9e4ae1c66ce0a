"""The paper's synthetic two-object dataset: scenes, captions, rendering, files."""

from engine.data.relations import PHRASINGS, RELATIONS, relation_of
from engine.data.render import render, render_batch
from engine.data.scenes import COLORS, SHAPES, Scene, sample_scene, sample_scenes

__all__ = [
    "COLORS",
    "PHRASINGS",
    "RELATIONS",
    "SHAPES",
    "Scene",
    "relation_of",
    "render",
    "render_batch",
    "sample_scene",
    "sample_scenes",
]
