"""Text in the bundle: the tokenizer a model's token ids come from (``tokenizer.json`` of the
``tokenizers`` library) and the rule that makes ids of one fixed length: truncate at the right
(the tokenizer's own strategy, so special tokens such as ``[SEP]`` stay), pad at the right
with the pad id. A runtime given text encodes it here and reports what it had to do.

Example:
    >>> enc = TextEncoder.from_bundle(bundle)
    >>> batch = enc.encode(["a fine film", ""])  # raises InputError: text 1 is empty
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from eecompile.errors import BundleError, ExportError, InputError

if TYPE_CHECKING:  # numpy is imported where text is encoded: the manifest (and eecompile info) stays light
    import numpy as np

    from eecompile.core.inputs import InputSpec

TOKENIZER_NAME = "tokenizer.json"
PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>")
# what the model's inputs are, in order: the ids, then optionally the attention mask (1 on tokens,
# 0 on padding) and the token type ids (all 0: one segment), as BERT-style models take them
TEXT_INPUTS = ("ids", "attention_mask", "token_type_ids")


@dataclass
class TextSpec:
    """``manifest.text``: how text becomes the model's input."""

    file: str
    sha256: str
    max_length: int  # the model input's length: every text is truncated or padded to it
    pad_id: int
    unk_id: int | None  # the id unknown words and characters become (None: the tokenizer has none)
    vocab_size: int
    truncation: str = "right"
    padding: str = "right"
    inputs: list[str] = field(default_factory=lambda: ["ids"])  # the model's inputs, in order (TEXT_INPUTS)

    @classmethod
    def from_dict(cls, d: dict) -> "TextSpec":
        return cls(file=str(d["file"]), sha256=str(d["sha256"]), max_length=int(d["max_length"]),
                   pad_id=int(d["pad_id"]), unk_id=None if d.get("unk_id") is None else int(d["unk_id"]),
                   vocab_size=int(d["vocab_size"]), truncation=str(d.get("truncation", "right")),
                   padding=str(d.get("padding", "right")), inputs=[str(v) for v in d.get("inputs", ["ids"])])


@dataclass
class Encoded:
    """A batch of texts as the model's ids, and what encoding did to each text."""

    ids: np.ndarray  # (N, max_length), the model input's dtype
    n_tokens: np.ndarray  # (N,) tokens before truncation (special tokens included)
    truncated: np.ndarray  # (N,) bool: longer than max_length, cut at the right
    n_unknown: np.ndarray  # (N,) tokens that became the unknown id
    model_inputs: np.ndarray | tuple[np.ndarray, ...] | None = None  # what the model takes: ids, or (ids, mask, ...)


def _load(path: Path, what: str, error: type[Exception]):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception subclasses for bad JSON and models
        raise error(f"{what} {path} is not a tokenizers tokenizer.json: {str(exc).splitlines()[0][:200]}",
                    hint="save it with tokenizer.save(path) (tokenizers), or tokenizer.backend_tokenizer.save(path) "
                         "(transformers)") from exc


def _unk_id(tok) -> int | None:
    model = tok.model
    unk = getattr(model, "unk_token", None)
    if unk is None:
        unk_id = getattr(model, "unk_id", None)  # Unigram keeps the id
        return None if unk_id is None else int(unk_id)
    return tok.token_to_id(unk)


def _check_text_inputs(specs: list[InputSpec]) -> None:
    """Input 0: integer ids of shape (L,); then optionally an attention mask and token type ids
    of the same length (integer, or float for a mask)."""
    first = specs[0]
    if first.dtype == "float32" or len(first.shape) != 1:
        raise ExportError(f"a tokenizer needs a model that takes token ids of shape (L,); this one takes "
                          f"{first.dtype} {first.shape}",
                          hint="declare input_shape=(max_length,) and input_dtype='int64' in the model")
    if len(specs) > len(TEXT_INPUTS):
        raise ExportError(f"the model takes {len(specs)} inputs; text fills at most {len(TEXT_INPUTS)} "
                          f"({', '.join(TEXT_INPUTS)})", hint="give the model (ids[, attention_mask[, token_type_ids]])")
    for name, spec in zip(TEXT_INPUTS[1:], specs[1:]):
        top = 1 if name == "attention_mask" else 0
        if spec.shape != first.shape or (spec.value_range is not None and not spec.value_range[0] <= 0 <= top
                                         <= spec.value_range[1]):
            raise ExportError(f"model input {TEXT_INPUTS.index(name)} would be the {name} but takes {spec.describe()}",
                              hint=f"the {name} has the ids' shape {first.shape} and values 0..{top}")


def check_tokenizer(path: str | Path, specs: list[InputSpec]) -> TextSpec:
    """The text spec of a tokenizer, after checking it fits the model's inputs (token ids of
    shape (L,), then optionally the attention mask and token type ids), every id of the
    tokenizer inside the model's vocabulary, a pad token. Run before any conversion;
    ``copy_tokenizer`` puts the file into the bundle."""
    src = Path(path)
    if not src.is_file():
        raise ExportError(f"tokenizer {src} does not exist", hint="give the path of a tokenizer.json")
    _check_text_inputs(specs)
    input_shape, value_range = specs[0].shape, specs[0].value_range
    tok = _load(src, "tokenizer", ExportError)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    if value_range is not None and (vocab - 1 > value_range[1] or value_range[0] > 0):
        raise ExportError(f"the tokenizer has {vocab} ids (0..{vocab - 1}) but the model takes ids "
                          f"{value_range[0]}..{value_range[1]}",
                          hint="export with the tokenizer the model was trained with (its embedding has one row "
                               "per token)")
    pad = tok.padding["pad_id"] if tok.padding else next(
        (tok.token_to_id(t) for t in PAD_TOKENS if tok.token_to_id(t) is not None), None)
    if pad is None:
        raise ExportError(f"tokenizer {src} has no pad token ({', '.join(PAD_TOKENS)}) and no padding setting",
                          hint="add one: tokenizer.enable_padding(pad_id=..., pad_token=...) and save it again")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    return TextSpec(file=TOKENIZER_NAME, sha256=digest, max_length=int(input_shape[0]), pad_id=int(pad),
                    unk_id=_unk_id(tok), vocab_size=int(vocab), inputs=list(TEXT_INPUTS[: len(specs)]))


def copy_tokenizer(path: str | Path, spec: TextSpec, staging: Path) -> None:
    shutil.copyfile(path, staging / spec.file)
    if hashlib.sha256((staging / spec.file).read_bytes()).hexdigest() != spec.sha256:
        raise ExportError(f"tokenizer {path} changed during the export", hint="export again")


class TextEncoder:
    """Texts -> fixed-length ids, as the bundle's tokenizer and text rule say."""

    def __init__(self, spec: TextSpec, path: Path, dtypes: list[str]) -> None:
        self.spec, self.dtypes = spec, dtypes
        self.dtype = dtypes[0]
        if not path.is_file():
            raise BundleError(f"{path} is missing", hint="re-export the bundle with --tokenizer")
        if hashlib.sha256(path.read_bytes()).hexdigest() != spec.sha256:
            raise BundleError(f"{path} does not match the manifest's sha256 (changed after export)",
                              hint="restore it, or re-export the bundle with --tokenizer")
        self.tok = _load(path, "bundle tokenizer", BundleError)
        self.tok.no_padding()
        self.tok.no_truncation()
        self.cut = _load(path, "bundle tokenizer", BundleError)  # the same, truncating (keeps [SEP])
        self.cut.no_padding()
        self.cut.enable_truncation(max_length=spec.max_length, direction=spec.truncation)

    @classmethod
    def from_bundle(cls, bundle) -> "TextEncoder":
        m = bundle.manifest
        if m.text is None:
            raise InputError(f"bundle {m.name!r} has no tokenizer, so it cannot take text",
                             hint="give token ids (--input ids.npy), or re-export with --tokenizer tokenizer.json")
        return cls(m.text, bundle.root / m.text.file, [t.source_dtype for t in m.input])

    def encode(self, texts: list[str]) -> Encoded:
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise InputError("no text given", hint="give at least one text")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"text {i} is a {type(t).__name__}, not a string", hint="pass strings")
            if not t.strip():
                raise InputError(f"text {i} is empty", hint="give at least one word per text")
        import numpy as np

        s = self.spec
        ids = np.full((len(texts), s.max_length), s.pad_id, dtype=self.dtype)
        n_tokens = np.zeros(len(texts), np.int64)
        n_unknown = np.zeros(len(texts), np.int64)
        n_real = np.zeros(len(texts), np.int64)  # tokens kept (the attention mask's ones)
        try:
            full, cut = self.tok.encode_batch(list(texts)), self.cut.encode_batch(list(texts))
        except Exception as exc:  # e.g. a word-level vocabulary without an unknown token
            raise InputError(f"the tokenizer cannot encode the text: {str(exc).splitlines()[0][:200]}",
                             hint="the bundle's tokenizer has no unknown token: remove the words it does not know") \
                from exc
        for i, (f, c) in enumerate(zip(full, cut)):
            row = c.ids[: s.max_length]
            ids[i, : len(row)] = row
            n_real[i] = len(row)
            n_tokens[i] = len(f.ids)
            if s.unk_id is not None:
                n_unknown[i] = sum(1 for t in row if t == s.unk_id)
        mask = np.arange(s.max_length)[None, :] < n_real[:, None]
        filled = {"ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        xs = tuple(filled[name].astype(dt) for name, dt in zip(s.inputs, self.dtypes))
        return Encoded(ids, n_tokens, n_tokens > s.max_length, n_unknown, xs[0] if len(xs) == 1 else xs)
