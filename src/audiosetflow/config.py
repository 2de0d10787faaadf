"""The configuration schema, its defaults, validation and typed config sections.

The schema (``config.schema.yaml`` next to this module; ``workflow/schemas/config.schema.yaml``
links to it) describes every key of ``config.yaml`` with its type, range and default. This
module is the one place that reads it:

* :func:`validate` checks a whole configuration the way the Snakefile needs it: it coerces
  values given on the command line (``--config``) to the schema's types, fills in every
  default (nested ones too) and raises :class:`ConfigError` with a one-line message naming the
  key, e.g. ``config: unknown key 'download.retires' (did you mean 'retries'?)``.
* :func:`section` builds a frozen dataclass from one top-level section, taking the defaults
  from the schema, so a dataclass never has to repeat them::

      @dataclass(frozen=True)
      class DemoSpec:
          clips_per_class: int = 80
          ...

          @classmethod
          def from_config(cls, demo_cfg):
              return section(cls, demo_cfg, "demo")

  Fields the section does not have (here ``mix_fraction``) keep the dataclass default; values
  from another section go in as keywords (``section(FeatureParams, cfg, "features",
  sample_rate=...)``). A test (``tests/test_config.py``) checks that the dataclass defaults
  equal the schema's, so the two cannot drift apart.
* :func:`defaults` and :func:`schema` give the schema's defaults and the schema itself.
* :func:`redact_config` is the copy of a config that may leave the process (report, landing
  page, logs, metrics files, checkpoints, the parameters Snakemake stores): secrets replaced
  by :data:`REDACTED`.

Values given with ``--config``
------------------------------
Snakemake parses ``--config KEY=VALUE``: a top-level ``VALUE`` becomes an int, a float,
``True``/``False`` or else YAML read with PyYAML's ``BaseLoader``, which keeps every scalar
a string: ``--config 'download={retries: 0}'`` gives ``{'retries': '0'}``. Snakemake
deep-merges that mapping into the section from the config files (``download.url_template``
etc. are kept). :func:`validate` therefore reads a string as YAML where the schema does not
accept a string (``'0'`` -> 0, ``'null'`` -> None, ``'true'`` -> True, ``'[a, b]'`` -> a
list); strings stay strings where the schema allows them (``proxy: null`` on the command line
sets the proxy ``'null'``), and so do values inside free-form mappings
(``download.ytdlp_options``). A section that arrives as a string (Snakemake keeps a value it
cannot parse as a string, which then replaces the whole section) is an error asking for an
overlay config file, as the section from the config files cannot be recovered.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from importlib import resources
from typing import Any, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "schema",
    "defaults",
    "section",
    "coerce",
    "validate",
    "REDACTED",
    "redact_config",
    "redact_text",
    "register_secrets",
    "restore_secrets",
]

T = TypeVar("T")

_SCHEMA_FILE = "config.schema.yaml"
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_MAX_MESSAGE = 200


class ConfigError(ValueError):
    """An invalid configuration; the message is one line starting with ``config:``."""


# --- the schema ------------------------------------------------------------------------------


@functools.cache
def _schema() -> dict:
    text = resources.files(__package__).joinpath(_SCHEMA_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def schema() -> dict:
    """The configuration schema (JSON Schema, draft 2020-12), parsed.

    The file is read once; every call returns a fresh copy, which the caller may change.

    Returns
    -------
    dict
        The parsed ``config.schema.yaml`` of the installed package.
    """
    return copy.deepcopy(_schema())


def _types(sub: Mapping) -> set[str]:
    t = sub.get("type")
    if t is None:
        return set()
    return {t} if isinstance(t, str) else set(t)


def _section_schema(name: str) -> dict:
    props = _schema().get("properties", {})
    if name not in props:
        raise KeyError(f"no section {name!r} in the config schema (sections: {', '.join(props)})")
    return props[name]


def _fill_defaults(instance: Any, sub: Mapping) -> None:
    """Set missing defaults in ``instance`` in place, recursing into objects and arrays.

    As ``snakemake.utils.validate(set_default=True)`` does: a missing key gets a copy of its
    default, then the defaults inside it are filled too (a missing section ``download`` gets
    its default ``{}`` and then every ``download.*`` default).
    """
    if isinstance(instance, MutableMapping):
        props = sub.get("properties", {})
        for key, prop in props.items():
            if key not in instance and "default" in prop:
                instance[key] = copy.deepcopy(prop["default"])
        for key, value in instance.items():
            if key in props:
                _fill_defaults(value, props[key])
    elif isinstance(instance, list) and isinstance(sub.get("items"), Mapping):
        for item in instance:
            _fill_defaults(item, sub["items"])


def defaults(section: str | None = None) -> dict:
    """The schema's defaults of one top-level section, nested defaults filled.

    Parameters
    ----------
    section : str, optional
        A top-level key of the schema whose value is a mapping (``"download"``,
        ``"training"``, ``"features"``, ``"demo"``, ``"audio"``, ...). None: the defaults of
        the whole configuration.

    Returns
    -------
    dict
        A new dict (the caller may change it).

    Raises
    ------
    KeyError
        If the schema has no such section.
    TypeError
        If the section is not a mapping (``labels``, ``shard_size``): use
        ``defaults()[name]``.
    """
    sub = _schema() if section is None else _section_schema(section)
    if "object" not in _types(sub):
        raise TypeError(f"config section {section!r} is not a mapping; use defaults()[{section!r}]")
    out = copy.deepcopy(sub.get("default", {}))
    _fill_defaults(out, sub)
    return out


# --- typed sections --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python scalar (without importing numpy)."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _fail(where: str, value: Any, what: str) -> ConfigError:
    return ConfigError(f"config: {where}: cannot use {value!r} as {what}")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (see :func:`section` for the rules)."""
    if tp is Any or tp is object or isinstance(tp, (str, typing.ForwardRef)):
        return value
    value = _plain(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        if any(type(value) is arm for arm in args):  # already one of the types: unchanged
            return value
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _convert(value, arm, where)
            except ConfigError:
                pass
        raise _fail(where, value, " or ".join(getattr(a, "__name__", str(a)) for a in args))
    if origin is typing.Literal:
        if value in args:
            return value
        raise _fail(where, value, f"one of {list(args)}")
    base = origin or tp
    if value is None:
        empties = {str: "", tuple: (), list: [], Sequence: [], set: set(), frozenset: frozenset()}
        if base in empties:
            return empties[base]
        if base in (dict, Mapping, MutableMapping):
            return {}
        raise _fail(where, value, getattr(base, "__name__", str(base)))
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _fail(where, value, "bool")
    if base is int:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value) if set(value) & set(".eE") else int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(where, value, "int")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)
        raise _fail(where, value, "float")
    if base is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _fail(where, value, "str")
    if base in (tuple, list, set, frozenset, Sequence):
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise _fail(where, value, getattr(base, "__name__", str(base)))
        items = list(value)
        if base is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise _fail(where, value, f"a tuple of {len(args)} items")
            return tuple(
                _convert(x, a, f"{where}[{i}]")
                for i, (x, a) in enumerate(zip(items, args, strict=True))
            )
        item_type = args[0] if args else Any
        out = [_convert(x, item_type, f"{where}[{i}]") for i, x in enumerate(items)]
        return list(out) if base in (list, Sequence) else base(out)
    if base in (dict, Mapping, MutableMapping):
        if not isinstance(value, Mapping):
            raise _fail(where, value, "a mapping")
        if len(args) == 2:
            return {
                _convert(k, args[0], where): _convert(v, args[1], f"{where}.{k}")
                for k, v in value.items()
            }
        return dict(value)
    if dataclasses.is_dataclass(base) and isinstance(base, type) and isinstance(value, Mapping):
        return _build(base, {k: (v, f"{where}.{k}") for k, v in value.items()})
    if isinstance(base, type):
        if isinstance(value, base):
            return value
        try:
            return base(value)
        except (TypeError, ValueError):
            raise _fail(where, value, base.__name__) from None
    return value


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that does not resolve: leave it unchecked
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _build(cls: type[T], values: Mapping[str, tuple[Any, str]]) -> T:
    """``cls(**values)`` with each value converted to its field's type; ``values`` maps a
    field name to (value, key path for messages); names that are no init field are ignored."""
    hints = _hints(cls)
    kw = {
        f.name: _convert(values[f.name][0], hints.get(f.name, Any), values[f.name][1])
        for f in dataclasses.fields(cls)
        if f.init and f.name in values
    }
    return cls(**kw)


def section(cls: type[T], cfg: Mapping[str, Any] | None, section: str, /, **overrides: Any) -> T:
    """Build the dataclass ``cls`` from the config section ``section``.

    The value of each field of ``cls`` is taken from, in order of precedence: ``overrides``,
    ``cfg``, the schema's default of ``section.<field>``; a field found in none of them keeps
    the dataclass default. Keys of ``cfg`` that ``cls`` has no field for are ignored (the
    schema, not this function, rejects unknown keys: see :func:`validate`).

    Each value is converted to the field's annotation:

    * ``int``: also from an integral float or a numeric string, never from a bool;
    * ``float``: from an int, float or numeric string;
    * ``bool``: also from 0/1 and the strings true/false/yes/no/on/off (any case);
    * ``str``: also from a number;
    * ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]``, ``frozenset[X]``: from any sequence
      but a string, each item converted;
    * ``dict``, ``Mapping[K, V]``: a new dict;
    * ``X | Y``: a value of one of the types unchanged, else the first type it converts to
      (None stays None for ``X | None``);
    * ``Literal[...]``: one of the values; a nested dataclass: from a mapping, as here;
      ``Any`` or an unresolvable annotation: unchanged.

    None for a ``str``, sequence or mapping field that is not Optional gives the empty value.
    Checks beyond the type (ranges, consistency) are the dataclass's own (``__post_init__``).

    Parameters
    ----------
    cls : type
        A dataclass, usually frozen.
    cfg : Mapping or None
        The section of the configuration (``config[section]``); None or ``{}`` for all
        defaults.
    section : str
        The top-level key of the schema the defaults come from.
    **overrides
        Values of fields taken from elsewhere (another section, the command line), e.g.
        ``sample_rate=config["audio"]["sample_rate"]``.

    Returns
    -------
    cls
        The instance.

    Raises
    ------
    ConfigError
        If a value cannot be converted to its field's type (the message names
        ``section.field``).
    KeyError
        If the schema has no section ``section``.

    Examples
    --------
    >>> section(FeatureParams, {"n_mels": 64}, "features", sample_rate=16000)  # doctest: +SKIP
    FeatureParams(sample_rate=16000, n_fft=2048, hop_length=512, n_mels=64, ...)
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"section() needs a dataclass type, got {cls!r}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {unknown[0]!r}")
    merged = {**defaults(section), **(cfg or {})}
    values = {k: (v, f"{section}.{k}") for k, v in merged.items()}
    values.update({k: (v, k) for k, v in overrides.items()})
    return _build(cls, values)


# --- coercion and validation -----------------------------------------------------------------


def _path(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _scalar_from_string(text: str, want: set[str]) -> Any:
    """``text`` read as a value of one of the JSON types ``want``, or ``text`` if it is none."""
    candidates = []
    try:
        candidates.append(yaml.safe_load(text))
    except yaml.YAMLError:
        pass
    if _NUMBER.fullmatch(text.strip()):
        candidates.append(float(text))
        if not set(text) & set(".eE"):
            candidates.append(int(text))
    for value in candidates:
        for t in want:
            if _is_type(value, t):
                return value
    return text


def _is_type(value: Any, t: str) -> bool:
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "string":
        return isinstance(value, str)
    if t == "array":
        return isinstance(value, list)
    if t == "object":
        return isinstance(value, Mapping)
    return False


def _string_words(sub: Mapping) -> set[str] | None:
    """The only strings a key with ``anyOf`` arms allows (each string arm an ``enum``), or
    None when any string is allowed."""
    words: set[str] = set()
    for arm in sub.get("anyOf", []):
        if "string" in _types(arm):
            if "enum" not in arm:
                return None
            words |= {str(w) for w in arm["enum"]}
    return words if sub.get("anyOf") else None


def _coerce(value: Any, sub: Mapping, parts: list) -> Any:
    want = _types(sub)
    scalars = want - {"string"}
    if (
        isinstance(value, str)
        and "string" in want
        and scalars
        and scalars <= {"integer", "number", "boolean", "null"}
        and (words := _string_words(sub)) is not None
        and value not in words
    ):  # e.g. node_cpus: an integer, "auto" or null; "4" from --config is the integer 4
        return _scalar_from_string(value, scalars)
    if isinstance(value, str) and want and "string" not in want:
        if "object" in want:
            where = _path(parts)
            raise ConfigError(
                f"config: {where}: got the string {_short(value)} where a mapping is expected; "
                f"give nested keys as --config '{where}={{key: value}}' (quoted, YAML) or in an "
                "overlay config file (--configfile my.yaml)"
            )
        if "array" in want:
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                parsed = value
            return parsed if isinstance(parsed, list) else value
        return _scalar_from_string(value, want)
    if isinstance(value, MutableMapping):
        props = sub.get("properties", {})
        for key in list(value):
            if key in props:
                value[key] = _coerce(value[key], props[key], [*parts, key])
    elif isinstance(value, list) and isinstance(sub.get("items"), Mapping):
        for i, item in enumerate(value):
            value[i] = _coerce(item, sub["items"], [*parts, i])
    return value


def coerce(config: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Convert strings in ``config`` to the schema's types, in place (see the module docs).

    A string is read as YAML (numbers also as Python floats, so ``1e-3`` works) where the
    schema's type of its key does not include ``string``; a result that does not have one of
    the schema's types leaves the string as it was, for :func:`validate` to report. Keys the
    schema does not know are left alone.

    Parameters
    ----------
    config : dict
        The configuration, e.g. Snakemake's ``config`` after ``--config``.

    Returns
    -------
    dict
        ``config`` itself.

    Raises
    ------
    ConfigError
        If a string stands where the schema wants a mapping (a section Snakemake could not
        parse from ``--config``, which replaced the section of the config files).
    """
    return _coerce(config, _schema(), [])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _property_paths(sub: Mapping, prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, prop in sub.get("properties", {}).items():
        yield key, f"{prefix}{key}"
        yield from _property_paths(prop, f"{prefix}{key}.")


def _unknown_key_message(error: Any) -> str | None:
    props = error.schema.get("properties", {})
    patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
    extra = [
        k for k in error.instance if k not in props and not any(p.search(str(k)) for p in patterns)
    ]
    if not extra:
        return None
    key = str(extra[0])
    parts = list(error.absolute_path)
    full = _path([*parts, key])
    # the closest known name at this level or, for a key put at the wrong level (``--config
    # retries=1``), anywhere in the schema
    here = {str(p): str(p) for p in props}
    anywhere: dict[str, str] = {}
    for leaf, path in _property_paths(_schema()):
        anywhere.setdefault(leaf, path)
    best, score = "", 0.6
    for names in (here, anywhere):
        for name, path in names.items():
            ratio = difflib.SequenceMatcher(None, key, name).ratio()
            if ratio > score:
                best, score = path, ratio
    if best and not parts and "." in best:  # a nested key given at the top level
        first, *rest = best.split(".")
        value = "..."
        for name in reversed(rest):
            value = f"{{{name}: {value}}}"
        suggestion = f" (did you mean {best!r}? on the command line: --config '{first}={value}')"
    elif best:
        suggestion = f" (did you mean {best!r}?)"
    elif props:
        where = f"in {_path(parts)}" if parts else "at the top level"
        suggestion = f" (known {where}: {', '.join(props)})"
    else:
        suggestion = ""
    more = f"; also unknown: {', '.join(repr(_path([*parts, k])) for k in extra[1:])}"
    return f"unknown key {full!r}{suggestion}" + (more if len(extra) > 1 else "")


def _message(error: Any) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        text = _unknown_key_message(error)
        if text:
            return f"config: {text}"
    where = _path(list(error.absolute_path)) or "top level"
    if error.validator == "type":
        want = error.schema["type"]
        want = [want] if isinstance(want, str) else want
        text = f"{_short(error.instance)} is not of type {' or '.join(map(repr, want))}"
    else:
        text = error.message
    return f"config: {where}: {' '.join(text.split())}"


def validate(config: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Validate the configuration against the schema and fill in its defaults, in place.

    Strings from ``--config`` are converted first (:func:`coerce`). Then every missing key
    gets its default, nested ones too, exactly as ``snakemake.utils.validate(config, schema,
    set_default=True)`` does (a missing section gets ``{}`` and then its keys' defaults).
    Then the result is checked with jsonschema's draft 2020-12 validator.

    Parameters
    ----------
    config : dict
        The whole configuration (Snakemake's ``config``); changed in place.

    Returns
    -------
    dict
        ``config`` itself, coerced and with all defaults.

    Raises
    ------
    ConfigError
        On the first problem (jsonschema's most relevant error), with a one-line message
        naming the key path, e.g. ``config: unknown key 'download.retires' (did you mean
        'retries'?)`` or ``config: download.retries: 'abc' is not of type 'integer'``; further
        problems are counted at the end of the line.
    """
    import jsonschema

    if not isinstance(config, MutableMapping):
        raise ConfigError(f"config: the configuration must be a mapping, got {_short(config)}")
    coerce(config)
    _fill_defaults(config, _schema())
    validator_cls = jsonschema.validators.validator_for(_schema(), jsonschema.Draft202012Validator)
    errors = list(validator_cls(_schema()).iter_errors(config))
    if not errors:
        return _check_model(_resolve_sample_rate(config))
    best = jsonschema.exceptions.best_match(errors)
    text = _message(best)
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    raise ConfigError(text)


def _check_model(config: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The ``model`` section's rules across keys (``init`` needs ``arch: cnn14``, ...), checked
    when the workflow is parsed rather than in the training jobs hours later."""
    from .learning.labelsets import ModelSettings

    try:
        ModelSettings.from_config(config.get("model"))
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    return config


def _resolve_sample_rate(config: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``audio.sample_rate`` null becomes the rate ``features.frontend`` needs; one that is
    too low for the front-end is a :class:`ConfigError`."""
    from .audio.frontends import check_sample_rate

    audio, feats = config.get("audio") or {}, config.get("features") or {}
    try:
        audio["sample_rate"] = check_sample_rate(
            feats.get("frontend", "librosa"), audio.get("sample_rate")
        )
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    return config


# --- secrets ------------------------------------------------------------------------------------

#: What :func:`redact_config` puts in place of a secret.
REDACTED = "[redacted]"

#: A key (at any depth, case-insensitive; ``-`` and ``_`` alike) whose value is a secret: it
#: contains one of these words. Covers ``download.cookies``, yt-dlp's ``password``,
#: ``videopassword``, ``ap_password``, ``username``, ``ap_username``, ``cookiefile``,
#: ``cookiesfrombrowser``, ``twofactor``, ``netrc_cmd``, ``client_certificate_key`` and
#: ``client_certificate_password``, and HTTP headers such as ``Authorization``,
#: ``Proxy-Authorization``, ``Cookie``, ``X-Api-Key`` or ``X-Auth-Token`` in
#: ``http_headers``.
SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "cookie",
    "auth",
    "credential",
    "username",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "certificate_key",
    "twofactor",
    "netrc",
    "session",
    "signature",
)

# scheme://user:password@host -> scheme://[redacted]@host (any string value, any key)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s?#]+)@")
# ?token=... or &api_key=... in a URL: the value
_URL_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:[^=&#\s]*(?:" + "|".join(SECRET_KEY_WORDS + ("key", "sig")) + r")[^=&#\s]*)=)"
    r"(?P<value>[^&#\s]*)",
    re.IGNORECASE,
)


def _secret_key(key: Any) -> bool:
    k = str(key).lower().replace("-", "_")
    return any(w in k or w in k.replace("_", "") for w in SECRET_KEY_WORDS)


#: Secret values of this process's config (:func:`register_secrets`), longest first.
_KNOWN_SECRETS: list[str] = []


def register_secrets(values: Any) -> None:
    """Make :func:`redact_text` replace these secret values wherever they appear (a cookies
    file's path that yt-dlp quotes in an error, a password an extractor echoes).

    ``values`` is a string, or a mapping or list searched for strings: every string of a
    mapping under a secret key (:data:`SECRET_KEY_WORDS`) and every string given directly
    (a path also as ``~`` expands it). Strings shorter than 4 characters are not registered
    (they would redact ordinary words).
    """
    found: set[str] = set()

    def walk(v: Any, secret: bool) -> None:
        if isinstance(v, Mapping):
            for k, x in v.items():
                walk(x, secret or _secret_key(k))
        elif isinstance(v, (list, tuple, set)):
            for x in v:
                walk(x, secret)
        elif isinstance(v, str) and secret and v.strip():
            found.update({v.strip(), os.path.expanduser(v.strip())})

    walk(values, isinstance(values, str))
    new = {s for s in found if len(s) >= 4} - set(_KNOWN_SECRETS)
    _KNOWN_SECRETS.extend(new)
    _KNOWN_SECRETS.sort(key=len, reverse=True)


def redact_text(text: str) -> str:
    """A message with the credentials of every URL in it and secret URL query values
    replaced (as :func:`redact_config` does in every string of a config), e.g. a download
    error that quotes a proxy URL, and every value :func:`register_secrets` was given."""
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _URL_QUERY_SECRET.sub(lambda m: f"{m['key']}{REDACTED}", text)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if _secret_key(k) and value[k] not in (None, "", [], {}) else _redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config (or of any part of one) that is safe to show, log or store.

    Use it wherever config leaves the process: the landing page and the Snakemake report
    (rule parameters), logs, metrics JSON and checkpoints. The config itself is not changed
    (the download jobs need the real values).

    What is replaced by :data:`REDACTED`, at any depth (``download.ytdlp_options`` and its
    ``http_headers`` included):

    * the value of every key that names a secret (:data:`SECRET_KEY_WORDS`: passwords,
      tokens, cookies and cookie files, user names, ``Authorization`` and other auth
      headers, API keys, netrc commands, client certificate keys), unless it is empty;
    * in every string, the credentials of a URL (``http://user:pass@host`` ->
      ``http://[redacted]@host``, e.g. ``download.proxy``) and the values of URL query
      parameters whose name says secret (``?token=...``, ``&api_key=...``, ``&sig=...``).

    Note that a config overlay is code: ``download.ytdlp_options`` can make yt-dlp run
    commands (its ``exec`` and other post-processors). Redaction hides secrets from readers
    of a report; it does not make a config from someone else safe to run.

    Parameters
    ----------
    cfg : mapping
        A config, validated or not.

    Returns
    -------
    dict
        A new nested structure (mappings become dicts, tuples lists).
    """
    return _redact(cfg)


def restore_secrets(shown: Any, real: Any) -> Any:
    """Undo :func:`redact_config` where it redacted: ``shown`` with every string that holds
    :data:`REDACTED` replaced by the value at the same place in ``real``.

    For a job that gets a redacted config as a parameter (so that Snakemake's stored
    parameters hold no secret) and needs the real values from ``snakemake.config``. Keys of
    ``shown`` missing from ``real`` keep their shown value.
    """
    if isinstance(shown, Mapping):
        real = real if isinstance(real, Mapping) else {}
        return {k: restore_secrets(v, real[k]) if k in real else v for k, v in shown.items()}
    if isinstance(shown, list) and isinstance(real, (list, tuple)) and len(real) == len(shown):
        return [restore_secrets(s, r) for s, r in zip(shown, real, strict=True)]
    if (isinstance(shown, str) and REDACTED in shown) or (shown == REDACTED):
        return real
    return shown
