"""The T5 encoder of a diffusers PixArt pipeline: ``text_encoder/`` and ``tokenizer/`` are
separate folders there (our ``t5:DIR`` encoder keeps both in one). Captions are padded to our
20 tokens (the pipeline pads to 120 or 300; padding is masked out either way), and each
sub-word piece gets the category of the caption word its offsets cover
(``engine.text.categories.subword_categories``)."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.core.errors import UserError
from engine.text.hf import T5TextEncoder, _quiet_loading


class PipelineT5Encoder(T5TextEncoder):
    kind = "pipeline-t5"

    @classmethod
    def from_parts(cls, encoder_dir: Path, tokenizer_dir: Path) -> PipelineT5Encoder:
        from transformers import AutoTokenizer, T5EncoderModel

        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(tokenizer_dir), local_files_only=True, use_fast=True
            )
        except (OSError, ValueError, TypeError, ImportError) as e:
            raise UserError(
                f"cannot load the tokenizer in {str(tokenizer_dir)!r} "
                f"({str(e).splitlines()[0][:160]}); a tokenizer with only spiece.model needs "
                "`pip install sentencepiece protobuf` to build its fast version"
            ) from None
        try:
            with _quiet_loading():
                model = T5EncoderModel.from_pretrained(
                    str(encoder_dir), local_files_only=True, use_safetensors=True,
                    dtype=torch.float32,
                )  # fmt: skip
        except (OSError, ValueError) as e:
            raise UserError(
                f"cannot load T5 weights from {str(encoder_dir)!r} ({str(e).splitlines()[0]})"
            ) from None
        return cls(f"t5:{encoder_dir}", tokenizer, model)
