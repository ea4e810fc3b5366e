"""How the embedding model runs on a CPU: plain torch, torch with bf16 autocast, or OpenVINO.

`QA_EMBED_BACKEND` (`Settings.embed_backend`) picks one of `BACKENDS`. `auto`, the default, is
plain torch on CUDA (fp16, as before) and OpenVINO on a CPU: bf16 where the CPU computes bf16
natively (AVX512_BF16 or AMX), fp32 elsewhere. On 2 AMD EPYC cores (AVX512_BF16) OpenVINO bf16
embedded passages about 2.4x faster than torch fp32 with vectors at cosine >= 0.9999 from the
fp32 ones (benchmarks/README.md, section 1), so an index built with one backend is searched
with another without loss.

OpenVINO runs only the transformer: `openvino_transformer` converts the model's transformer
(torch) into OpenVINO's format once, caches it next to the converted model keyed by the model's
fingerprint, and puts a module that calls OpenVINO in its place inside sentence-transformers, so
that tokenization, prompts, length-sorted batching, pooling and normalization stay
sentence-transformers' own. OpenVINO runs one stream per core (two calls at once on 2 cores):
`encode_in_parallel` splits a long list of texts over them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import queue
import re
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qa.index.format import atomic_write

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

__all__ = [
    "BACKENDS",
    "choose_backend",
    "compiled_folder",
    "cpu_has_bf16",
    "encode_in_parallel",
    "import_openvino",
    "model_xml",
    "openvino_config",
    "openvino_folder",
    "openvino_installed",
    "openvino_transformer",
]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "torch-bf16", "openvino", "openvino-f32")
# Bump when the conversion changes: the cached OpenVINO copies are then made again.
_OPENVINO_FORMAT = 1
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has native bf16 arithmetic (AVX512_BF16 or AMX); elsewhere bf16 is emulated, slow."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


def openvino_installed() -> bool:
    """Whether the `openvino` package can be imported (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def choose_backend(setting: str, device: str, *, openvino: bool, bf16: bool) -> str:
    """The backend that runs: 'torch-fp32', 'torch-fp16' (CUDA), 'torch-bf16', 'openvino-bf16' or
    'openvino-f32'.

    `setting` is one of `BACKENDS`, `device` the torch device already resolved ('cpu', 'cuda...'),
    `openvino` whether the package is installed, `bf16` whether the CPU has native bf16.
    OpenVINO asked for but not installed falls back to torch, with a warning.
    """
    if setting not in BACKENDS:
        raise ValueError(f"embed_backend must be one of {', '.join(BACKENDS)}, not {setting!r}")
    cuda = device.startswith("cuda")
    if setting.startswith("openvino") or (setting == "auto" and not cuda):
        if openvino:
            return "openvino-bf16" if bf16 and setting != "openvino-f32" else "openvino-f32"
        if cuda:
            fallback = "torch-fp16"
        else:
            fallback = "torch-bf16" if bf16 and setting != "openvino-f32" else "torch-fp32"
        log.warning(
            "The embedding backend %r needs the package openvino, which is not installed; "
            "embedding with %s instead (pip install openvino to get it back).",
            "openvino" if setting == "auto" else setting,
            fallback,
        )
        return fallback
    if cuda:
        return "torch-fp16"  # the GPU path: the model is cast to fp16 there, autocast not needed
    return "torch-bf16" if setting == "torch-bf16" else "torch-fp32"


def import_openvino():
    """The `openvino` module, imported with its usage reporting off. Returns the module."""
    # OpenVINO's model converter, imported with the package, reports usage to Google Analytics
    # unless the user opted out; qa promises to run offline, so it gets OpenVINO's own stub.
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def _cache_folder(cache_dir: Path, fingerprint: str, inputs: tuple[str, ...], ov_version: str) -> Path:
    key = f"{fingerprint}|{','.join(inputs)}|{ov_version}|{_OPENVINO_FORMAT}"
    return Path(cache_dir) / f"openvino-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _convert(transformer: torch.nn.Module, inputs: tuple[str, ...], dest: Path) -> None:
    """Convert the torch transformer to OpenVINO's format in `dest`, atomically (a folder rename)."""
    import torch

    ov = import_openvino()

    class LastHiddenState(torch.nn.Module):
        # One plain tensor out, whatever output class the transformers model returns.
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(inputs, args)), return_dict=True).last_hidden_state

    example = {name: torch.ones(2, 16, dtype=torch.long) for name in inputs}
    if "attention_mask" in example:
        example["attention_mask"][1, 8:] = 0  # with padding, so that tracing keeps the mask
    if "token_type_ids" in example:
        example["token_type_ids"].zero_()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python branches it freezes; none depends on the input shapes.
        warnings.simplefilter("ignore")
        wrapped = LastHiddenState(transformer).eval()
        converted = ov.convert_model(wrapped, example_input=tuple(example.values()))
    # Named after the features sentence-transformers passes; both dimensions stay dynamic.
    for port, name in zip(converted.inputs, inputs):
        port.get_tensor().set_names({name})
    dest.parent.mkdir(parents=True, exist_ok=True)
    # fp32 weights on disk: the f32 backend is then exact, and bf16 is applied at compile time.
    # A concurrent conversion that wins the rename leaves its copy in place: used as well.
    written = atomic_write(
        dest, lambda tmp: ov.save_model(converted, str(tmp / "model.xml"), compress_to_fp16=False), durable=False
    )
    if not written and not (dest / "model.xml").exists():
        raise OSError(f"{dest} is in the way of the converted model; delete it and try again")


def openvino_transformer(
    model: SentenceTransformer,
    cache_dir: Path,
    fingerprint: str,
    *,
    precision: str,
    threads: int,
    latency: bool = False,
) -> int:
    """Make `model` run its transformer on OpenVINO (CPU), in place; return its parallel streams.

    `precision` is 'bf16' or 'f32' (OpenVINO's inference precision), `threads` the CPU threads
    it uses. By default OpenVINO splits them into streams (one per core on a small machine) that
    run calls at the same time: `encode_in_parallel` keeps them busy. `latency=True` makes one
    stream using every thread instead (a lone call is faster, several calls queue).
    The first call for a model converts it (a few seconds) into `cache_dir`, keyed by
    `fingerprint`; later calls only read and compile it (about a second). The torch weights are
    dropped. Raises if the model is not a plain transformers text model.
    """
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    ov = import_openvino()
    module = model[0]
    # sentence-transformers 6 holds the transformers model as `.model`, 5.x as `.auto_model`.
    attr = "model" if isinstance(getattr(module, "model", None), torch.nn.Module) else "auto_model"
    transformer = getattr(module, attr)
    from qa.embed.cache import blob_state, cache_lock, loaded_blobs, mark_used, prune_blobs, prune_compiled

    dest, inputs = openvino_folder(model, cache_dir, fingerprint)
    # Under the cache's lock: OpenVINO writes a compiled model in place, so a process reading it
    # meanwhile would find it half written (and delete it, or link it into a query bundle).
    # Uncontended, the lock costs an open; a concurrent load waits for this one's writing.
    with cache_lock(cache_dir):
        if not (dest / "model.xml").exists():
            log.info("converting the embedding model to OpenVINO into %s (once)", dest)
            _convert(transformer, inputs, dest)
        core = ov.Core()
        # OpenVINO's model cache (the compiled model, beside the converted one): later processes
        # read it back instead of compiling, as the quick question path (qa.embed.quick) does.
        config = openvino_config(precision, threads, latency=latency)
        folder = compiled_folder(dest, config)
        before = blob_state(folder)
        core.set_property({"CACHE_DIR": str(folder)})
        # The resolved path: OpenVINO names the compiled model after the path as given, so the same
        # file reached through a symbolic link (QA_CACHE_DIR or a folder above it) would compile
        # into another 470 MB file each time; the quick path compiles it under this path too.
        compiled = core.compile_model(str(model_xml(dest)), "CPU", config)
        mark_used(folder, loaded_blobs(folder, before))
        prune_compiled(dest / "compiled")  # what earlier versions compiled, which this one never reads
        prune_blobs(folder)  # compiled models of this configuration not used lately
    idle: queue.SimpleQueue = queue.SimpleQueue()  # infer requests not in use (one per concurrent call)
    model_config = transformer.config
    del transformer  # not referenced below, so that its torch weights are freed once replaced

    class OpenVINOTransformer(torch.nn.Module):
        """Takes what the transformers model took, returns its `last_hidden_state`, from OpenVINO."""

        def __init__(self) -> None:
            super().__init__()
            self.config = model_config  # sentence-transformers reads the model type from it

        def forward(self, **features: torch.Tensor) -> BaseModelOutput:
            # A request serves one call at a time; the web server embeds from several threads.
            try:
                request = idle.get_nowait()
            except queue.Empty:
                request = compiled.create_infer_request()
            try:
                out = request.infer({name: features[name].numpy() for name in inputs})
                # Copied: the request reuses its output buffer on its next call.
                hidden = torch.from_numpy(out[0].copy())
            finally:
                idle.put(request)
            return BaseModelOutput(last_hidden_state=hidden)

    # One call before any concurrent ones: OpenVINO's Python binding initializes statics on its
    # first call, and two threads making that first call at once deadlock (one waits for the GIL
    # inside the initializer, the other holds the GIL waiting for the initializer).
    stand_in = OpenVINOTransformer()
    stand_in(**{name: torch.full((1, 4), int(name != "token_type_ids")) for name in inputs})
    setattr(module, attr, stand_in)
    return int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))


def openvino_folder(model: SentenceTransformer, cache_dir: Path, fingerprint: str) -> tuple[Path, tuple[str, ...]]:
    """(folder of the model's OpenVINO copy, the inputs its transformer takes), for a loaded model."""
    ov = import_openvino()
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    inputs = tuple(name for name in _INPUTS if name in preprocess(["a"]))
    return _cache_folder(cache_dir, fingerprint, inputs, ov.__version__), inputs


def model_xml(openvino_dir: Path) -> Path:
    """The OpenVINO copy's `model.xml` under its resolved path, the one both paths compile: OpenVINO's
    cache key is a hash of the path as given, so one file must always be named the same way."""
    return (Path(openvino_dir) / "model.xml").resolve()


def compiled_folder(openvino_dir: Path, config: dict) -> Path:
    """Where OpenVINO caches the models compiled from `openvino_dir` with `config`: a folder per
    configuration, so that one holds one compiled model and a model no configuration of this
    version compiles (left loose by an earlier one) can be told apart and removed."""
    key = json.dumps(config, sort_keys=True)
    return Path(openvino_dir) / "compiled" / hashlib.sha256(key.encode()).hexdigest()[:12]


def openvino_config(precision: str, threads: int, *, latency: bool = False) -> dict:
    """OpenVINO's compile configuration: `precision` 'bf16' or 'f32', `threads` CPU threads. The
    full path and the quick question path (qa.embed.quick) compile with the same one, so that
    both compute the same vectors."""
    return {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY" if latency else "THROUGHPUT",
    }


def encode_in_parallel(encode: Callable[[list[str]], np.ndarray], texts: list[str], parts: int) -> np.ndarray:
    """`encode(texts)` as `parts` calls at the same time (one per OpenVINO stream), rows in order.

    Part i gets every parts-th text, so that all parts get similar lengths (each call still sorts
    its own texts by length into batches).
    """
    if parts <= 1 or len(texts) < 2:
        return encode(texts)
    parts = min(parts, len(texts))
    with ThreadPoolExecutor(parts) as pool:
        outputs = list(pool.map(lambda i: encode(texts[i::parts]), range(parts)))
    rows = np.empty((len(texts), *outputs[0].shape[1:]), dtype=outputs[0].dtype)
    for i, output in enumerate(outputs):
        rows[i::parts] = output
    return rows
