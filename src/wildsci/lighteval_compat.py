"""lighteval 0.13 as this kit needs it: offline-safe start-up and a response cache that knows about weights.

Two problems with the stock ``lighteval`` command, and what this module does about them:

1. **Offline start-up.** Every ``lighteval`` command imports all built-in tasks; one of them
   (``tiny_benchmarks``) downloads a pickle from GitHub *at import time* and raises when there is no network,
   so the CLI dies before reading any argument. :func:`main` (console script ``wildsci-lighteval``, or
   ``python -m wildsci.lighteval_compat``) imports that module with connection errors turned into a failed
   download -- exactly what happens online when GitHub answers 404 -- and then runs lighteval's own CLI
   unchanged: same sub-commands, same arguments. Online, the stock ``lighteval`` command works as is
   (with ``huggingface_hub<2`` and ``xxhash<4``, which the ``eval`` extra pins, and LiteLLM < 1.109: see 3.).

2. **Stale cached responses.** lighteval caches every generation under a hash of the *model arguments*
   (``model_name=/path/to/checkpoint,...``), not of the weights: retrain into the same folder and it
   silently serves the old model's answers. :func:`install_weights_aware_cache` adds a fingerprint of the
   weights on disk (:func:`weights_fingerprint`) to that hash. It also keeps the cache where ``cache_dir``
   says: with an absolute model path, lighteval 0.13 writes it *inside the model folder*.
   ``eval_tasks/wildsci_tasks.py`` installs both fixes when lighteval loads it as ``--custom-tasks``, i.e.
   before the model and its cache are created, so they apply to the stock ``lighteval`` command too.

3. **LiteLLM** (``lighteval endpoint litellm``, the server backend of ``wildsci eval``): lighteval 0.13 turns on
   LiteLLM's *disk* response cache when it imports its model loader -- for *every* command, ``accelerate`` too --
   and LiteLLM 1.109 removed that cache type, so with LiteLLM installed every command dies at start
   (``AttributeError: DISK``). That cache is keyed on the model *name*, so a retrained checkpoint served
   under the same name would get the old answers. :func:`prepare_litellm` lets the import succeed and turns
   LiteLLM's cache off; lighteval's own weights-aware cache (2.) still caches every answer. LiteLLM's price
   list is read from its bundled copy instead of GitHub (``LITELLM_LOCAL_MODEL_COST_MAP``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from wildsci.errors import UserError

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_META_FILES = ("config.json", "generation_config.json", "adapter_config.json")
_SAMPLE_BYTES = 4 << 20  # hash the first and last 4 MiB of each weight file (plus its size and mtime)


def _file_digest(path: Path) -> str:
    st = path.stat()
    h = hashlib.sha256(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_SAMPLE_BYTES))
        if st.st_size > 2 * _SAMPLE_BYTES:
            fh.seek(-_SAMPLE_BYTES, os.SEEK_END)
            h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()


def weights_fingerprint(model_name: str, revision: str | None = None, subfolder: str | None = None) -> str:
    """A short hash that changes whenever the weights a model reference points at change.

    Local folder: size, mtime and the first/last 4 MiB of every weight file plus the config files (a full hash
    of a 15 GB checkpoint would cost minutes per run). Hub id: the commit of the snapshot in the local Hub
    cache (lighteval has downloaded it by the time its cache is created), else the revision as given.
    """
    p = Path(model_name).expanduser()
    if subfolder:
        p = p / subfolder
    if p.is_dir():
        parts = []
        for f in sorted(p.iterdir()):
            if f.is_file() and (f.suffix in _WEIGHT_SUFFIXES or f.name in _META_FILES):
                parts.append(
                    _file_digest(f) if f.suffix in _WEIGHT_SUFFIXES else hashlib.sha256(f.read_bytes()).hexdigest()
                )
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model_name, "config.json", revision=revision or "main")
    except Exception:  # an unusual id format: fall back to the revision string
        cached = None
    if isinstance(cached, str):
        snapshot = Path(cached).parent.name  # .../snapshots/<commit>/config.json
        return f"hub-{snapshot[:16]}"
    return f"rev-{revision or 'main'}"


def cache_folder_name(model_name: str) -> str:
    """A relative folder name for a model reference: Hub ids as they are, local paths as ``<name>-<hash>``.

    lighteval 0.13 builds ``Path(cache_dir) / model_name``; with an absolute local path that join *discards*
    ``cache_dir`` and writes the cache inside the model folder itself (and from there into a Hub upload of it).
    """
    p = Path(model_name)
    if p.is_absolute() or model_name.startswith(("~", ".")) or ".." in p.parts or p.expanduser().exists():
        full = str(p.expanduser().resolve())
        return f"local/{p.name or 'model'}-{hashlib.sha256(full.encode()).hexdigest()[:8]}"
    return model_name


def _weights_name(model_config) -> str | None:
    """What a model config's weights are called: ``model_name``, less a LiteLLM ``provider/`` prefix (the
    server backend names the model ``hosted_vllm/<the folder or Hub id the server loaded>``)."""
    name = getattr(model_config, "model_name", None)
    provider = getattr(model_config, "provider", None)
    if name and provider and name.startswith(f"{provider}/"):
        return name[len(provider) + 1 :]
    return name


def install_weights_aware_cache() -> None:
    """Make lighteval's ``SampleCache`` key on the weights and stay inside ``cache_dir`` (idempotent).

    Two changes to ``SampleCache`` (lighteval 0.13.0, pinned by the ``eval`` extra): the model hash also covers
    :func:`weights_fingerprint`, and the cache folder uses :func:`cache_folder_name`.
    """
    from lighteval.utils.cache_management import SampleCache

    original = SampleCache.get_model_hash
    if getattr(original, "_wildsci_weights_aware", False):
        return

    def get_model_hash(self, model_config) -> str:
        base = original(self, model_config)
        name = _weights_name(model_config)
        if not name:
            return base
        revision, subfolder = getattr(model_config, "revision", None), getattr(model_config, "subfolder", None)
        fp = weights_fingerprint(name, revision, subfolder)
        return hashlib.sha256(f"{base}:{fp}".encode()).hexdigest()[:16]

    def __init__(self, model_config) -> None:  # lighteval 0.13.0's __init__, with a safe folder name
        self.model_config = model_config
        self.model_hash = self.get_model_hash(model_config)
        root = Path(os.path.expanduser(model_config.cache_dir))
        self.cache_dir = root / cache_folder_name(_weights_name(model_config)) / self.model_hash
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.registry = None
        self.existing_indices = self._load_cached_indices()
        self._task_hashes = {}

    get_model_hash._wildsci_weights_aware = True  # type: ignore[attr-defined]
    get_model_hash._wildsci_original = original  # type: ignore[attr-defined]
    SampleCache.get_model_hash = get_model_hash
    SampleCache.__init__ = __init__


def import_builtin_tasks_offline_safe() -> None:
    """Import lighteval's ``tiny_benchmarks`` with network failures turned into a failed download.

    Only ``requests.get`` during that one import is affected, and only connection errors: online, the
    download happens exactly as in the stock command.
    """
    if "lighteval.tasks.tasks.tiny_benchmarks" in sys.modules:
        return
    import requests

    original = requests.get

    def get(url, *args, **kwargs):
        try:
            return original(url, *args, **kwargs)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            failed = requests.models.Response()
            failed.status_code = 503  # tiny_benchmarks only writes its file on 200
            failed.url = url
            return failed

    requests.get = get
    try:
        import lighteval.tasks.tasks.tiny_benchmarks  # noqa: F401
    finally:
        requests.get = original


def prepare_litellm() -> None:
    """Import lighteval's LiteLLM backend with any LiteLLM release, with LiteLLM's own response cache off.

    lighteval 0.13 runs ``litellm.cache = Cache(type=LiteLLMCacheType.DISK)`` at import; LiteLLM >= 1.109 has no
    disk cache. The missing member is aliased to the in-memory type just for that import, then the cache is
    dropped: lighteval's :class:`SampleCache` (weights-aware, above) is the one response cache.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from litellm.types.caching import LiteLLMCacheType

    if "DISK" not in LiteLLMCacheType.__members__:
        type.__setattr__(LiteLLMCacheType, "DISK", LiteLLMCacheType.LOCAL)
    from lighteval.models.endpoints import litellm_model  # creates the cache dropped next

    litellm.cache = None
    _patch_litellm_client(litellm_model.LiteLLMClient)


class EndpointError(RuntimeError):
    """A request to the model server still failed after lighteval's retries."""


#: Sampling parameters also sent in the request body (``extra_body``), whether or not LiteLLM's ``hosted_vllm``
#: provider forwards them (``litellm.drop_params`` is on): a request states every parameter, so the server's
#: defaults (the model's ``generation_config.json``) change nothing.
VLLM_SAMPLING_KEYS = ("top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "top_p")


def vllm_sampling(generation_parameters: object) -> dict:
    """The vLLM-specific sampling parameters of a lighteval ``GenerationParameters`` that are set (not None)."""
    return {k: v for k in VLLM_SAMPLING_KEYS if (v := getattr(generation_parameters, k, None)) is not None}


def _patch_litellm_client(client_cls: type) -> None:
    """Three fixes to lighteval 0.13's LiteLLM client (idempotent).

    1. **No silent empty answers.** When a request still fails after its retries, the client returns an empty
       answer, which is scored wrong *and cached*: a dead server looks like a bad model, even on a rerun. Here
       the run stops instead, with an error naming the endpoint and the last failure (status and message).
    2. **Generated token ids.** The client keeps only an answer's text, so ``completion_tokens`` would read 0.
       vLLM returns the ids when asked (``return_token_ids``); they are matched back to the answers by text
       (identical texts from one model are identical token sequences) inside lighteval's response cache.
    3. **The recipe's sampling, not the server's.** vLLM applies the model's ``generation_config.json`` as its
       default sampling (``--generation-config auto``: Qwen2.5-Instruct's ``repetition_penalty: 1.05``, top-k,
       top-p); the vLLM sampling parameters also go in the request body, so a request states them all.
    """
    if getattr(client_cls.greedy_until, "_wildsci_patched", False):
        return
    import threading

    import litellm
    from lighteval.tasks.requests import SamplingMethod
    from lighteval.utils.cache_management import cached

    ids_by_text: dict[str, list[int]] = {}
    sampling: dict = {}  # the running model's vLLM sampling parameters (one model per lighteval process)
    last_error = threading.local()  # per request thread: the failure of its latest attempt, or None
    completion = litellm.completion

    def completion_with_ids(*args, **kwargs):
        if str(kwargs.get("model", "")).startswith("hosted_vllm/"):
            kwargs["extra_body"] = {**(kwargs.get("extra_body") or {}), **sampling, "return_token_ids": True}
        try:
            response = completion(*args, **kwargs)
        except Exception as e:
            status = getattr(e, "status_code", None)
            text = " ".join(str(getattr(e, "message", None) or e).split())[:200]
            last_error.value = f"{'HTTP ' + str(status) + ': ' if status else ''}{type(e).__name__}: {text}"
            raise
        last_error.value = None
        for choice in getattr(response, "choices", None) or []:
            # litellm >= 1.110 sets choice.token_ids; older ones keep unknown fields in provider_specific_fields
            ids = getattr(choice, "token_ids", None) or (getattr(choice, "provider_specific_fields", None) or {}).get(
                "token_ids"
            )
            if ids is not None and choice.message.content is not None:
                ids_by_text[choice.message.content] = list(ids)
        return response

    call_api = client_cls._LiteLLMClient__call_api

    def call_api_or_fail(self, *args, **kwargs):
        last_error.value = None
        response = call_api(self, *args, **kwargs)
        if last_error.value is not None:
            raise EndpointError(
                f"request to {self.base_url or self.provider} failed after {self.API_MAX_RETRY} tries: "
                f"{last_error.value}"
            )
        return response

    uncached = client_cls.greedy_until.__wrapped__

    def greedy_until_with_ids(self, docs):
        sampling.clear()
        sampling.update(vllm_sampling(self.generation_parameters))
        responses = uncached(self, docs)
        for r in responses:
            if not r.output_tokens and r.text and all(t in ids_by_text for t in r.text):
                r.output_tokens = [ids_by_text[t] for t in r.text]
        return responses

    wrapped = cached(SamplingMethod.GENERATIVE)(greedy_until_with_ids)
    wrapped._wildsci_patched = True  # type: ignore[attr-defined]
    litellm.completion = completion_with_ids
    client_cls._LiteLLMClient__call_api = call_api_or_fail
    client_cls.greedy_until = wrapped


def main(argv: list[str] | None = None) -> int:
    """``wildsci-lighteval ...``: lighteval's own CLI, offline-safe, with the weights-aware response cache."""
    args = argv if argv is not None else sys.argv[1:]
    import_builtin_tasks_offline_safe()
    install_weights_aware_cache()
    if importlib.util.find_spec("litellm") is not None:  # lighteval imports its LiteLLM backend for every command
        prepare_litellm()
    from lighteval.__main__ import app

    try:
        app(args=args, prog_name="wildsci-lighteval", standalone_mode=True)
    except SystemExit as e:  # typer exits with the command's status
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    except UserError as e:
        print(f"wildsci-lighteval: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
