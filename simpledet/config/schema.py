"""The config mechanism: typed, nested, validated sections that freeze once resolved.

A section is a class whose annotated attributes are its fields (like a dataclass)::

    class RpnConfig(Section):
        nms_iou: float = field(0.7, check=fraction)
        anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)

        @property
        def num_anchors(self) -> int:   # derived: computed, never stored, cannot be set
            ...

Every assignment (in a config file, from ``--set``, or in code) is checked: an unknown key
raises :class:`ConfigError` naming the key and the nearest valid one, a wrong type names the
key, the expected type and the value. Supported field types: ``int``, ``float`` (ints are
accepted and converted), ``bool``, ``str``, ``Literal[...]`` choices, ``tuple[T, ...]`` and
fixed-length ``tuple[T1, T2]`` (lists are converted to tuples), ``T | None`` (the strings
"none"/"null" mean None there, so ``--set pretrain=none`` works), and nested sections.
``freeze()`` runs each section's ``validate()`` (cross-field rules) and makes the tree read-only.
"""
import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

_NONE_STRINGS = ("none", "null")
_MISSING = object()


class ConfigError(Exception):
    """A config problem, with a short message meant for users, not a traceback.

    Attributes:
        message: what is wrong, e.g. "unknown key 'rpn.nms_iuo'".
        key: the dotted key concerned, if any.
        suggestion: the nearest valid key or a hint, if any.
        file: the config file, if known.
        line: the line number in ``file``, if known.
        source_line: the text of that line, if known.
    """

    def __init__(self, message, key=None, suggestion=None, file=None, line=None,
                 source_line=None):
        super().__init__(message)
        self.message = message
        self.key = key
        self.suggestion = suggestion
        self.file = file
        self.line = line
        self.source_line = source_line

    def __str__(self):
        where = ""
        if self.file is not None:
            where = f"{self.file}, line {self.line}: " if self.line else f"{self.file}: "
        text = where + self.message
        if self.suggestion:
            text += f"; {self.suggestion}"
        if self.source_line:
            text += "\n    " + self.source_line.strip()
        return text


class ConfigKeyError(ConfigError, AttributeError):
    """Reading or writing a key that does not exist (also an AttributeError for hasattr())."""


@dataclass(frozen=True)
class Check:
    """A value rule for one field: ``predicate(value)`` must hold; ``rule`` says what it means."""

    predicate: Callable[[Any], bool]
    rule: str


positive = Check(lambda v: v > 0, "must be > 0")
non_negative = Check(lambda v: v >= 0, "must be >= 0")
fraction = Check(lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")
all_positive = Check(lambda v: len(v) > 0 and all(x > 0 for x in v),
                     "must be a non-empty tuple of values > 0")
increasing = Check(lambda v: all(a < b for a, b in zip(v, v[1:])),
                   "must be strictly increasing")


@dataclass(frozen=True)
class _FieldDefault:
    default: Any
    check: Check | None


def field(default, check=None):
    """Declares a field's default together with a value rule.

    Args:
        default: the default value (immutable: use tuples, not lists).
        check: a :class:`Check` the value must satisfy, e.g. ``positive``.
    """
    return _FieldDefault(default, check)


@dataclass(frozen=True)
class FieldSpec:
    """A field's declaration: name, type annotation, default and optional value rule."""

    name: str
    type: Any
    default: Any
    check: Check | None


def nearest(word, candidates, cutoff=0.0):
    """The candidate closest to ``word`` (difflib ratio >= cutoff), or None when there is none."""
    candidates = list(candidates)
    if not candidates:
        return None
    lowered = {c.lower(): c for c in candidates}
    best = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[best[0]] if best else None


def type_name(tp):
    """A readable name for a field type: 'float', 'tuple[int, ...]', "one of 'a', 'b'"."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{type_name(args[0])}, ...]"
        return "tuple[" + ", ".join(type_name(a) for a in args) + "]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


class _TypeMismatch(Exception):
    pass


def coerce(tp, value):
    """Checks ``value`` against the annotation ``tp`` and returns its canonical form.

    Ints become floats for float fields, lists become tuples, "none" becomes None for
    optional fields, dicts become sections for section fields.

    Raises:
        _TypeMismatch: the value does not fit the type.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in _NONE_STRINGS):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value)
            except _TypeMismatch:
                pass
        raise _TypeMismatch()
    if origin is Literal:
        for choice in args:
            # type() comparison keeps True from matching a Literal[1] and 1 from matching 1.0.
            if type(value) is type(choice) and value == choice:
                return value
        raise _TypeMismatch()
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise _TypeMismatch()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v) for v in value)
        if len(value) != len(args):
            raise _TypeMismatch()
        return tuple(coerce(a, v) for a, v in zip(args, value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _TypeMismatch()
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _TypeMismatch()
        return value
    if tp is bool or tp is str:
        if type(value) is not tp:
            raise _TypeMismatch()
        return value
    if isinstance(tp, type) and issubclass(tp, Section):
        if isinstance(value, tp):
            return value.copy()
        if isinstance(value, dict):
            section = tp()
            section.update(value)
            return section
        raise _TypeMismatch()
    raise TypeError(f"unsupported field type {tp!r}")


def _is_section_type(tp):
    return isinstance(tp, type) and issubclass(tp, Section)


class Section:
    """Base class of config sections; see the module docstring.

    Subclasses declare fields as annotated class attributes, derived values as properties and
    cross-field rules in :meth:`validate`. Construct with keyword overrides:
    ``BackboneConfig(depth=101)``.
    """

    _fields: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls)
        reserved = {n for n in dir(Section) if not n.startswith("_")}
        fields = {}
        for name, tp in hints.items():
            if name.startswith("_") or typing.get_origin(tp) is typing.ClassVar:
                continue
            if name in reserved:
                raise TypeError(f"{cls.__name__}.{name}: the name is reserved by Section")
            raw = getattr(cls, name, _MISSING)
            if isinstance(raw, property):
                raise TypeError(f"{cls.__name__}.{name}: a property shadows the field")
            check = None
            if isinstance(raw, _FieldDefault):
                raw, check = raw.default, raw.check
                setattr(cls, name, raw)
            if raw is _MISSING:
                if not _is_section_type(tp):
                    raise TypeError(f"{cls.__name__}.{name}: a field needs a default")
                raw = tp
            fields[name] = FieldSpec(name, tp, raw, check)
        cls._fields = fields

    def __init__(self, **values):
        object.__setattr__(self, "_path", "")
        object.__setattr__(self, "_frozen", False)
        for spec in self._fields.values():
            default = spec.default
            if isinstance(default, type) and issubclass(default, Section):
                default = default()
            elif isinstance(default, Section):
                default = default.copy()
            self._assign(spec, default)
        self.update(values)

    # --- keys and values -------------------------------------------------------------------

    @classmethod
    def field_names(cls):
        """The field names of this section, in declaration order."""
        return list(cls._fields)

    @classmethod
    def derived_names(cls):
        """The public properties (derived values) of this section, in definition order."""
        names = []
        for klass in reversed(cls.__mro__):
            if klass is Section or not issubclass(klass, Section):
                continue  # Section's own properties (is_frozen) are not config values
            for name, attr in vars(klass).items():
                if isinstance(attr, property) and not name.startswith("_") and name not in names:
                    names.append(name)
        return names

    def _key(self, name):
        return f"{self._path}{name}"

    def __setattr__(self, name, value):
        if name.startswith("_"):
            raise ConfigKeyError(f"cannot set private attribute '{self._key(name)}'",
                                 key=self._key(name))
        spec = self._fields.get(name)
        if spec is None:
            raise self._unknown_key(name, settable_only=True)
        if self._frozen:
            raise ConfigError(f"cannot set '{self._key(name)}': the config is frozen",
                              key=self._key(name),
                              suggestion="set it in the config file or with --set")
        self._assign(spec, value)

    def _assign(self, spec, value):
        key = self._key(spec.name)
        try:
            value = coerce(spec.type, value)
        except _TypeMismatch:
            raise ConfigError(f"'{key}' expects {type_name(spec.type)}, got {value!r} "
                              f"({type(value).__name__})", key=key) from None
        except ConfigError as err:  # from a dict assigned to a section field
            raise err from None
        if spec.check is not None and value is not None and not spec.check.predicate(value):
            raise ConfigError(f"'{key}' {spec.check.rule}, got {value!r}", key=key)
        if isinstance(value, Section):
            value._set_path(key + ".")
        object.__setattr__(self, spec.name, value)

    def _set_path(self, path):
        object.__setattr__(self, "_path", path)
        for name in self._fields:
            child = getattr(self, name)
            if isinstance(child, Section):
                child._set_path(f"{path}{name}.")

    def _unknown_key(self, name, settable_only=False):
        key = self._key(name)
        if settable_only and name in self.derived_names():
            doc = _first_doc_line(getattr(type(self), name))
            return ConfigKeyError(
                f"'{key}' is derived (computed from other fields) and cannot be set", key=key,
                suggestion=f"it is computed as: {doc}" if doc else None)
        candidates = self.field_names() + ([] if settable_only else self.derived_names())
        best = nearest(name, candidates)
        hint = f"did you mean '{self._key(best)}'?" if best else None
        return ConfigKeyError(f"unknown key '{key}'", key=key, suggestion=hint)

    def __getattr__(self, name):
        # Only called for missing attributes: a misspelled read in a builder names the nearest key.
        if name.startswith("_"):
            raise AttributeError(name)
        raise self._unknown_key(name)

    def update(self, values):
        """Sets several fields of this section from a dict (nested dicts for sub-sections)."""
        for name, value in values.items():
            current = getattr(self, name) if name in self._fields else None
            if isinstance(value, dict) and isinstance(current, Section):
                current.update(value)  # keeps the other fields of the sub-section
            else:
                setattr(self, name, value)

    def get(self, dotted_key):
        """The value of a dotted key (a field or a derived value): ``cfg.get("rpn.nms_iou")``."""
        node = self
        for part in dotted_key.split("."):
            node = getattr(node, part)
        return node

    def set(self, dotted_key, value):
        """Sets a field by dotted key, e.g. ``cfg.set('backbone.depth', 101)``."""
        *parents, last = dotted_key.split(".")
        node = self
        for part in parents:
            node = getattr(node, part)
            if not isinstance(node, Section):
                raise ConfigKeyError(f"'{_node_key(dotted_key, part)}' is a value, not a section",
                                     key=dotted_key)
        setattr(node, last, value)

    def field_type(self, dotted_key):
        """The type annotation of the field at a dotted key."""
        *parents, last = dotted_key.split(".")
        node = self
        for part in parents:
            node = getattr(node, part)
        spec = node._fields.get(last)
        if spec is None:
            raise node._unknown_key(last, settable_only=True)
        return spec.type

    # --- whole-tree operations -------------------------------------------------------------

    def to_dict(self):
        """Fields as a nested dict (sections become dicts; derived values are not included)."""
        out = {}
        for name in self._fields:
            value = getattr(self, name)
            out[name] = value.to_dict() if isinstance(value, Section) else value
        return out

    def flatten(self):
        """Fields as ``{dotted_key: value}``, in declaration order."""
        out = {}
        for name in self._fields:
            value = getattr(self, name)
            if isinstance(value, Section):
                out.update({f"{name}.{k}": v for k, v in value.flatten().items()})
            else:
                out[name] = value
        return out

    def derived(self):
        """Derived values of the whole tree as ``{dotted_key: value}``."""
        out = {name: getattr(self, name) for name in self.derived_names()}
        for name in self._fields:
            value = getattr(self, name)
            if isinstance(value, Section):
                out.update({f"{name}.{k}": v for k, v in value.derived().items()})
        return out

    def all_keys(self):
        """Every settable dotted key of the tree (used for suggestions on ``--set``)."""
        return list(self.flatten())

    def copy(self):
        """An unfrozen deep copy."""
        clone = type(self)()
        clone.update(self.to_dict())
        clone._set_path(self._path)
        return clone

    def validate(self):
        """Cross-field rules of this section; subclasses raise ConfigError on violations."""

    def freeze(self):
        """Validates the whole tree (children first) and makes it read-only. Returns self."""
        for name in self._fields:
            child = getattr(self, name)
            if isinstance(child, Section):
                child.freeze()
        self.validate()
        object.__setattr__(self, "_frozen", True)
        return self

    @property
    def is_frozen(self):
        return self._frozen

    def error(self, name, message, suggestion=None):
        """A ConfigError about field ``name`` of this section (for use in validate())."""
        return ConfigError(f"'{self._key(name)}' {message}", key=self._key(name),
                           suggestion=suggestion)

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self):
        body = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"{type(self).__name__}({body})"


def _first_doc_line(prop):
    doc = (prop.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else None


def _node_key(dotted_key, part):
    """The prefix of ``dotted_key`` up to and including ``part``."""
    parts = dotted_key.split(".")
    return ".".join(parts[:parts.index(part) + 1])
