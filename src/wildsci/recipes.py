"""Recipes: YAML files parsed into typed dataclasses, with one-line errors.

Each stage owns its recipe dataclass; the CLI maps recipe kinds to them (:class:`RecipeKind`), so this module
names no stage and imports nothing above it. It holds the shared machinery so every recipe fails the same way:
a :class:`RecipeError` whose message is one line naming the file, the key and the fix.

Why not only ``HfArgumentParser``? It passes YAML values to the dataclass unchecked (a string where an
int belongs surfaces much later as a traceback inside training). We check keys and types here first and
then hand the checked values to TRL's parser for the GRPO recipes, so open-r1-style ``--key value``
overrides keep working.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from wildsci.errors import UserError

MISSING = dataclasses.MISSING


def check_count(name: str, value: int, lo: int, hi: int, why: str) -> None:
    """A count inside ``[lo, hi]``, else ``ValueError`` naming the value, the bound and why the bound is there.

    Why upper bounds: a count far beyond any real build (``questions_per_chunk 99999999999999999999999``) does not
    fail by itself -- it multiplies into a plan that runs out of memory or time; it must fail when the recipe loads.
    """
    if not lo <= value <= hi:
        raise ValueError(f"{name} is {value}: it must lie in [{lo}, {hi}] ({why}) -- give a value in that range")


class RecipeError(UserError):
    """A recipe problem, reported as one line: ``<file>: <what> -- <how to fix>``."""


# ----------------------------------------------------------------------------------------- loading
def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: recipe file not found -- check the path (recipes live under recipes/<kind>/)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{p}: invalid YAML{where}: {problem} -- fix the syntax") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{p}: not UTF-8 text -- save the recipe as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_overrides(args: list[str], source: str = "command line") -> dict[str, Any]:
    """``["--lr", "1e-5", "--generator.model=x", "--push"]`` -> ``{"lr": 1e-5, "generator.model": "x", "push": True}``.

    Values are parsed as YAML scalars/lists so ``--num_voters 8`` is an int and ``--keep '[a, b]'`` a list.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--") or len(a) < 3:
            raise RecipeError(f"{source}: unexpected argument {a!r} -- overrides look like --key value or --key=value")
        key = a[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            raw = args[i + 1]
            i += 2
        else:
            raw = "true"
            i += 1
        try:
            out[key.replace("-", "_")] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            out[key.replace("-", "_")] = raw
    return out


def merge_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply dotted overrides (``generator.model``) onto a nested recipe mapping (a copy)."""
    merged = json.loads(json.dumps(data, default=str))
    for key, value in overrides.items():
        node = merged
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"command line: --{key} sets a field inside {part!r}, which is not a section")
        node[parts[-1]] = value
    return merged


# ------------------------------------------------------------------------------------ type checks
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


class _TypeMismatch(Exception):
    pass


def coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert where YAML is lossy (``1e-5`` is a str in YAML 1.1)."""
    if tp is Any or tp is None or isinstance(tp, str | typing.TypeVar):
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, source, key)
            except (_TypeMismatch, RecipeError):
                continue
        raise _TypeMismatch
    if origin is typing.Literal:
        if value in args:
            return value
        raise _TypeMismatch
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _TypeMismatch
        inner = args[0] if args and args[-1] is not Ellipsis or len(args) == 2 else Any
        items = [coerce(v, inner, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _TypeMismatch
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _TypeMismatch
        return from_dict(tp, value, source, prefix=f"{key}.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for m in tp:
            if value == m.value or value == m.name or value is m:
                return m.value if isinstance(m.value, str) else m
        raise _TypeMismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _TypeMismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _TypeMismatch
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _TypeMismatch from None
        raise _TypeMismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _TypeMismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _TypeMismatch
    return value


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # some third-party dataclasses have annotations that do not resolve
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _help(f: dataclasses.Field) -> str:
    return str(f.metadata.get("help", "")).split("\n")[0].strip()


def _is_section_with(tp: Any, keys: set[str]) -> bool:
    return dataclasses.is_dataclass(tp) and keys <= {f.name for f in dataclasses.fields(tp)}


def _unknown_key(source: str, key: str, valid: list[str]) -> RecipeError:
    close = difflib.get_close_matches(key.split(".")[-1], valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "remove it (see the recipe's dataclass for valid keys)"
    return RecipeError(f"{source}: unknown key {key!r} -- {hint}")


def _check_value(source: str, key: str, f: dataclasses.Field, tp: Any, value: Any) -> Any:
    try:
        return coerce(value, tp, source, key)
    except _TypeMismatch:
        h = _help(f)
        raise RecipeError(
            f"{source}: key {key!r} must be {_type_name(tp)}, got {value!r}" + (f" ({h})" if h else "")
        ) from None


def from_dict(cls: type, data: dict[str, Any], source: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, raising one-line :class:`RecipeError` on any problem."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    for key in data:
        if key not in fields:
            valid = list(fields)
            if isinstance(data[key], dict):  # a mapping belongs to a section that has its keys: `generater.model`
                sub = set(data[key])
                fits = [n for n in fields if _is_section_with(hints.get(n), sub)]
                valid = fits or valid
            raise _unknown_key(source, f"{prefix}{key}", valid)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _check_value(source, f"{prefix}{name}", f, hints.get(name, f.type), data[name])
        elif f.default is MISSING and f.default_factory is MISSING:
            h = _help(f)
            raise RecipeError(
                f"{source}: missing required key {prefix}{name!r}"
                + (f" ({h})" if h else "")
                + " -- add it to the recipe"
            )
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{source}: {str(e).splitlines()[0]}") from None


def check_flat(data: dict[str, Any], classes: tuple[type, ...], source: str) -> None:
    """Check a flat (open-r1 / TrlParser style) recipe whose keys are spread over several dataclasses."""
    owners: dict[str, tuple[dataclasses.Field, Any]] = {}
    for cls in classes:
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                owners.setdefault(f.name, (f, hints.get(f.name, f.type)))
    for key, value in data.items():
        if key not in owners:
            raise _unknown_key(source, key, list(owners))
        f, tp = owners[key]
        _check_value(source, key, f, tp, value)
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.init and f.default is MISSING and f.default_factory is MISSING and f.name not in data:
                raise RecipeError(f"{source}: missing required key {f.name!r} ({_help(f)}) -- add it to the recipe")


def load_recipe(path: str | Path, cls: type, overrides: dict[str, Any] | None = None) -> Any:
    """Load a nested recipe into ``cls`` (YAML values, then dotted command-line overrides)."""
    data = load_yaml(path)
    if overrides:
        data = merge_overrides(data, overrides)
    return from_dict(cls, data, str(path))


def recipe_hash(data: dict[str, Any] | Any) -> str:
    """A short, stable hash of a recipe's resolved values (recorded in every built row)."""
    if dataclasses.is_dataclass(data):
        data = dataclasses.asdict(data)
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- recipe kinds
@dataclasses.dataclass(frozen=True)
class RecipeKind:
    """One kind of recipe, as the CLI defines it (this module names no stage).

    ``classes`` returns the dataclass(es) whose fields are the recipe's keys: one nested dataclass, or several for a
    flat TRL-style recipe. ``check`` validates a loaded mapping (raises :class:`RecipeError`). ``command`` is what a
    user runs with such a recipe, quoted in errors.
    """

    name: str
    classes: typing.Callable[[], tuple[type, ...]]
    check: typing.Callable[[dict[str, Any], str], None]
    command: str


def _top_level_keys(classes: tuple[type, ...]) -> set[str]:
    return {f.name for cls in classes for f in dataclasses.fields(cls) if f.init}


def guess_kind(data: dict[str, Any], kinds: dict[str, RecipeKind]) -> str | None:
    """The kind whose keys cover the most of ``data``'s top-level keys (ties and empty recipes: ``None``)."""
    keys = {k for k in data if k != "env"}
    if not keys:
        return None
    scores = {name: len(keys & _top_level_keys(kind.classes())) for name, kind in kinds.items()}
    best = max(scores.values())
    winners = [name for name, score in scores.items() if score == best]
    return winners[0] if best and len(winners) == 1 else None


def kind_from_path(path: str | Path, kinds: dict[str, RecipeKind]) -> str | None:
    """``recipes/<kind>/x.yaml`` -> ``kind``; ``None`` for a recipe stored elsewhere."""
    for part in reversed(Path(path).parent.parts):
        if part in kinds:
            return part
    return None


def expect_kind(path: str | Path, want: str, kinds: dict[str, RecipeKind]) -> None:
    """Refuse, in one line, a recipe of another kind (``wildsci eval recipes/data/demo.yaml``) before its keys are
    checked against the wrong dataclass: an unknown-key error would suggest the wrong fix."""
    data = load_yaml(path)
    found = kind_from_path(path, kinds) or guess_kind(data, kinds)
    if found is None or found == want:
        return
    if guess_kind(data, kinds) in (None, want):  # a folder name alone does not overrule keys that fit
        return
    raise RecipeError(
        f"{path}: this is {_article(found)} {found} recipe, not {_article(want)} {want} recipe "
        f"-- use `{kinds[found].command}`"
    )


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def check_recipe_file(path: str | Path, kinds: dict[str, RecipeKind], kind: str | None = None) -> str:
    """Validate one recipe and return its kind: ``kind`` if given, else its folder, else the kind its keys fit."""
    data = load_yaml(path)
    if kind is not None and kind not in kinds:
        raise RecipeError(f"{path}: unknown recipe kind {kind!r} -- use one of {', '.join(kinds)}")
    kind = kind or kind_from_path(path, kinds) or guess_kind(data, kinds)
    if kind is None:
        raise RecipeError(
            f"{path}: cannot tell the recipe kind from its folder or its keys -- put it under "
            f"recipes/<{'|'.join(kinds)}>/ or pass --kind"
        )
    kinds[kind].check(data, str(path))
    return kind


def check_nested(cls: type) -> typing.Callable[[dict[str, Any], str], None]:
    """A checker for a nested recipe: build ``cls`` from the mapping (its ``__post_init__`` checks included)."""

    def check(data: dict[str, Any], source: str) -> None:
        from_dict(cls, data, source)

    return check


def check_flat_recipe(classes: typing.Callable[[], tuple[type, ...]]) -> typing.Callable[[dict[str, Any], str], None]:
    """A checker for a flat TRL-style recipe; TrlParser applies a top-level ``env:`` mapping, so it is allowed."""

    def check(data: dict[str, Any], source: str) -> None:
        data = dict(data)
        env = data.pop("env", None)
        if env is not None and not isinstance(env, dict):
            raise RecipeError(f"{source}: key 'env' must be a mapping of environment variables, got {env!r}")
        check_flat(data, tuple(classes()), source)

    return check


def check_accelerate_config(data: dict[str, Any], source: str) -> None:
    """Accelerate configs are accelerate's own format: validate with accelerate's loader."""
    import tempfile

    from accelerate.commands.config.config_args import ClusterConfig

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(data, fh)
    try:
        ClusterConfig.from_yaml_file(fh.name)
    except (ValueError, TypeError, KeyError) as e:
        msg = str(e).splitlines()[0].replace(fh.name, source)  # name the recipe, not the temporary copy
        raise RecipeError(f"{source}: not a valid accelerate config: {msg}") from None
    finally:
        Path(fh.name).unlink(missing_ok=True)
