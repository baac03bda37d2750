"""Loading a config file by path, ``--set`` overrides, dumping and diffing resolved configs.

A config file is a Python module that leaves a config object in a module-level ``cfg``::

    from _base.faster_fpn import faster_fpn   # one base per detector family

    cfg = faster_fpn()
    cfg.backbone.depth = 101

The folder holding ``_base/`` (the nearest one above the file, e.g. ``config/``) is put on
``sys.path`` while the file runs, so leaves import their base with a plain import. Errors
(missing file, syntax error, bad key or value) become one :class:`ConfigError` naming the file,
line, key and the nearest valid key; CLIs print it with :func:`exit_on_config_error`.
"""
import argparse
import ast
import contextlib
import importlib
import json
import linecache
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simpledet.config.schema import ConfigError, Section, nearest

CONFIG_VARIABLE = "cfg"
BASE_PACKAGE = "_base"
_ABSENT = "<absent>"


# --- loading -------------------------------------------------------------------------------

def load_config(path, overrides=(), freeze=True):
    """Loads a config file (.py, or a .json written by :func:`dump_config`).

    Args:
        path: the config file.
        overrides: ``"dotted.key=value"`` strings, applied after the file (see
            :func:`apply_overrides`).
        freeze: validate and make the config read-only (builders get frozen configs).

    Returns:
        The config object (a :class:`Section`, e.g. ``FasterRcnnConfig``). ``cfg.name``
        defaults to the file's stem.

    Raises:
        ConfigError: the file is missing or broken, or a key or value is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", suggestion=_sibling_hint(path))
    cfg = _load_json(path) if path.suffix == ".json" else _exec_config_file(path)
    if cfg.name is None:
        cfg.name = path.stem
    apply_overrides(cfg, overrides or ())
    if freeze:
        try:
            cfg.freeze()
        except ConfigError as err:
            err.file = err.file or str(path)
            raise
    return cfg


def _sibling_hint(path):
    folder = path.parent
    if not folder.is_dir():
        return f"folder {folder} does not exist"
    siblings = [p.name for p in folder.iterdir() if p.suffix in (".py", ".json")]
    best = nearest(path.name, siblings, cutoff=0.6)
    return f"did you mean '{folder / best}'?" if best else None


def _config_root(path):
    """The file's folder or its parent, whichever holds ``_base/`` (config/ for config/x.py and
    config/shapes/x.py); else the file's folder."""
    folder = path.resolve().parent
    for candidate in (folder, folder.parent):
        if (candidate / BASE_PACKAGE).is_dir():
            return candidate
    return folder


@contextlib.contextmanager
def _config_import_path(root):
    """Makes ``import _base.x`` resolve under ``root``, fresh for every load."""
    def purge():
        for name in [n for n in sys.modules if n == BASE_PACKAGE or
                     n.startswith(BASE_PACKAGE + ".")]:
            del sys.modules[name]

    purge()
    importlib.invalidate_caches()
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        purge()


def _display_path(filename):
    rel = os.path.relpath(filename)
    return filename if rel.startswith("..") else rel


def _innermost_config_frame(tb, root):
    """(file, line) of the innermost traceback frame inside the config folder, or (None, None)."""
    found = (None, None)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if Path(filename).resolve().is_relative_to(root):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _exec_config_file(path):
    source = path.read_text()
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as err:
        raise _syntax_error(err) from None
    root = _config_root(path)
    namespace = {"__name__": f"_simpledet_config_{path.stem}", "__file__": str(path.resolve())}
    with _config_import_path(root):
        try:
            exec(code, namespace)
        except SyntaxError as err:  # in an imported base
            raise _syntax_error(err) from None
        except Exception as err:  # noqa: BLE001 (anything a config file does wrong)
            filename, line = _innermost_config_frame(err.__traceback__, root)
            if filename is None:
                filename, line = str(path), None
            if not isinstance(err, ConfigError):
                err = ConfigError(f"{type(err).__name__}: {err}",
                                  suggestion=_import_hint(err, root))
            err.file = _display_path(filename)
            err.line = line
            err.source_line = linecache.getline(filename, line) if line else None
            raise err from None
    cfg = namespace.get(CONFIG_VARIABLE)
    if not isinstance(cfg, Section):
        raise ConfigError(f"the file must set a module-level '{CONFIG_VARIABLE}' to a config "
                          f"object (e.g. faster_fpn()), found {type(cfg).__name__}",
                          file=str(path))
    return cfg


def _syntax_error(err):
    return ConfigError(f"syntax error: {err.msg}", file=_display_path(err.filename or "?"),
                       line=err.lineno, source_line=err.text)


def _import_hint(err, root):
    if not isinstance(err, ModuleNotFoundError) or not (err.name or "").startswith(BASE_PACKAGE):
        return None
    bases = [f"{BASE_PACKAGE}.{p.stem}" for p in (root / BASE_PACKAGE).glob("*.py")]
    best = nearest(err.name, bases)
    return f"did you mean '{best}'?" if best else None


def _load_json(path):
    try:
        payload = json.loads(path.read_text())
        module_name, class_name = payload["class"].split(":")
        fields = payload["fields"]
    except json.JSONDecodeError as err:
        raise ConfigError(f"invalid JSON: {err.msg}", file=str(path), line=err.lineno) from None
    except (KeyError, ValueError, TypeError, AttributeError):
        raise ConfigError("not a dumped config: expected {'class': 'module:Class', "
                          "'fields': {...}}", file=str(path)) from None
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ConfigError(f"unknown config class {payload['class']!r}", file=str(path)) from None
    if not (isinstance(cls, type) and issubclass(cls, Section)):
        raise ConfigError(f"{payload['class']!r} is not a config class", file=str(path))
    cfg = cls()
    try:
        cfg.update(fields)
    except ConfigError as err:
        err.file = str(path)
        raise
    return cfg


# --- overrides -----------------------------------------------------------------------------

def parse_override(text):
    """Splits ``"a.b=value"`` into ``("a.b", value)``.

    The value is parsed with ``ast.literal_eval`` (numbers, tuples, lists, None, True, quoted
    strings) and kept as the raw string when that fails, so ``name=my_run`` and
    ``pretrain=none`` work unquoted; ``true`` / ``false`` (any case) are booleans.
    """
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. rpn.nms_iou=0.6")
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return key, raw


def apply_overrides(cfg, overrides):
    """Applies ``"dotted.key=value"`` strings to an unfrozen config, each checked like a field
    assignment. A value that parses (e.g. ``123``) but fits only as a string is set as the
    string.

    Raises:
        ConfigError: naming the override, the key and the nearest valid key or expected type.
    """
    valid_keys = cfg.all_keys()
    section_keys = {k.rsplit(".", i)[0] for k in valid_keys for i in range(1, k.count(".") + 1)}
    derived_keys = set(cfg.derived())
    for text in overrides:
        key, value = parse_override(text)
        _, _, raw = text.partition("=")
        raw = raw.strip()
        if key not in valid_keys and key not in section_keys and key not in derived_keys:
            best = nearest(key, valid_keys)
            raise ConfigError(f"--set {text}: unknown key '{key}'", key=key,
                              suggestion=f"did you mean '{best}'?" if best else None)
        try:
            cfg.set(key, value)
        except ConfigError as err:
            if value == raw or not _accepts(cfg, key, raw):
                raise ConfigError(f"--set {text}: {err.message}", key=err.key,
                                  suggestion=err.suggestion) from None
            cfg.set(key, raw)


def _accepts(cfg, key, value):
    probe = cfg.copy()
    try:
        probe.set(key, value)
    except ConfigError:
        return False
    return True


# --- dump and diff -------------------------------------------------------------------------

def config_to_json(cfg):
    """The config as JSON text: its class, every field (nested) and the derived values."""
    payload = {"class": f"{type(cfg).__module__}:{type(cfg).__qualname__}",
               "fields": cfg.to_dict(), "derived": cfg.derived()}
    return json.dumps(payload, indent=2) + "\n"


def config_to_python(cfg):
    """The config as a loadable Python config file listing every field, one per line.

    Derived values follow as comments, so the file is also the readable record of what ran.
    """
    cls = type(cfg)
    lines = [f'"""Resolved config {cfg.name!r} (written by simpledet.config.dump_config).', "",
             "Every field is listed; derived values are comments at the end. It loads like any",
             'config file: --config <this file>."""',
             f"from {cls.__module__} import {cls.__qualname__}", "",
             f"{CONFIG_VARIABLE} = {cls.__qualname__}()"]
    for key, value in cfg.flatten().items():
        lines.append(_assignment(f"{CONFIG_VARIABLE}.{key}", value))
    lines += ["", "# Derived values (computed from the fields above; not settable):"]
    for key, value in cfg.derived().items():
        lines.append(f"# {key} = {value!r}")
    return "\n".join(lines) + "\n"


def _assignment(target, value, width=100):
    """``target = repr(value)``, long tuples wrapped greedily under the opening parenthesis."""
    prefix = f"{target} = "
    text = repr(value)
    if len(prefix) + len(text) <= width or not isinstance(value, tuple) or len(value) < 2:
        return prefix + text
    indent = " " * (len(prefix) + 1)
    lines, current = [], prefix + "("
    for item in value:
        piece = repr(item) + ","
        if len(current) + len(piece) + 1 > width and current.strip() not in ("", prefix + "("):
            lines.append(current.rstrip())
            current = indent
        current += piece + " "
    lines.append(current.rstrip().rstrip(",") + ")")
    return "\n".join(lines)


def dump_config(cfg, folder, stem="config"):
    """Writes ``{stem}.py`` and ``{stem}.json`` (see config_to_python / config_to_json).

    Returns:
        (python_path, json_path).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    py_path, json_path = folder / f"{stem}.py", folder / f"{stem}.json"
    for target, text in ((py_path, config_to_python(cfg)), (json_path, config_to_json(cfg))):
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, target)  # atomic: a killed run never leaves a half-written config
    return py_path, json_path


@dataclass(frozen=True)
class ConfigDifference:
    """One differing key: ``a`` / ``b`` are the values ("<absent>" when missing)."""

    key: str
    a: Any
    b: Any
    derived: bool


def diff_configs(a, b, include_derived=True):
    """The keys whose values differ between two configs, fields first, then derived values."""
    groups = [(a.flatten(), b.flatten(), False)]
    if include_derived:
        groups.append((a.derived(), b.derived(), True))
    out = []
    for values_a, values_b, derived in groups:
        keys = list(values_a) + [k for k in values_b if k not in values_a]
        for key in keys:
            va, vb = values_a.get(key, _ABSENT), values_b.get(key, _ABSENT)
            if va != vb:
                out.append(ConfigDifference(key, va, vb, derived))
    return out


def format_diff(differences):
    """One line per difference: ``key: a -> b`` (``key (derived): ...`` for derived values)."""
    lines = []
    for d in differences:
        tag = " (derived)" if d.derived else ""
        lines.append(f"{d.key}{tag}: {d.a!r} -> {d.b!r}")
    return "\n".join(lines)


# --- command-line helpers ------------------------------------------------------------------

def add_config_arguments(parser: argparse.ArgumentParser, config_required=True):
    """Adds ``--config PATH`` and ``--set KEY=VALUE [KEY=VALUE ...]`` (repeatable)."""
    parser.add_argument("--config", required=config_required, help="config file (.py or .json)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                        metavar="KEY=VALUE",
                        help="override a field, e.g. --set train.images_per_device=1 "
                             "pretrain=none (values parsed as Python literals)")


@contextlib.contextmanager
def exit_on_config_error(stream=None, exit_code=2):
    """Turns a ConfigError into one 'config error: ...' message on stderr and an exit code.

    Usage in a CLI::

        with exit_on_config_error():
            cfg = load_config(args.config, args.overrides)
    """
    try:
        yield
    except ConfigError as err:
        print(f"config error: {err}", file=stream or sys.stderr)
        raise SystemExit(exit_code) from None
