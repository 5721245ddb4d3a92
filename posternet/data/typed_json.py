"""Frozen dataclasses to and from JSON, with a one-line error per bad field.

posternet.records describes manifest.json as dataclasses; this module turns
them into JSON values and back, driven by their fields and type hints, so
the file's shape is written down once (in the classes) and checked on every
read. A field's JSON key is its name, or its metadata 'key'; a field with
metadata {'stored': False} stays out of the file, and one with
{'optional': True} may be missing from it (added in a later version: it
then takes its default).

Types understood: int (a whole number >= 0), float, str, Optional[X],
Tuple[X, ...], Tuple[X, Y], Mapping[str, X] and nested dataclasses.
"""

import collections.abc
import dataclasses
import json
import typing

from posternet import cli

_EXPECTED = {dict: 'an object', list: 'a list', str: 'a string',
             int: 'a whole number >= 0', float: 'a number',
             bool: 'true or false'}


def stored_fields(cls) -> list:
  """(JSON key, field) of what a dataclass keeps in the file."""
  return [(f.metadata.get('key', f.name), f) for f in dataclasses.fields(cls)
          if f.metadata.get('stored', True)]


def to_json(value):
  """JSON values: dataclasses become objects, tuples lists, mappings dicts."""
  if dataclasses.is_dataclass(value):
    return {key: to_json(getattr(value, f.name))
            for key, f in stored_fields(value)}
  if isinstance(value, collections.abc.Mapping):
    return {key: to_json(item) for key, item in value.items()}
  if isinstance(value, (tuple, list)):
    return [to_json(item) for item in value]
  return value


def from_json(value, kind, path: str, where: str = '', advice: str = ''):
  """value (parsed JSON) checked against the type `kind`, built into it.

  Args:
    value: what json.load returned (or a part of it).
    kind: a dataclass or one of the types in the module docstring.
    path: the file, for messages.
    where: the field's place in the file, e.g. splits.train.shards[0].
    advice: what the user should do, appended to every message.

  Returns:
    The value as `kind`: a dataclass instance, tuple, dict, or plain value.

  Raises:
    cli.UserError: one line naming path and the field, e.g. `records/
      manifest.json: splits.train.shards[0].num_examples is "12" (a
      string), not a whole number >= 0`; never a KeyError or TypeError.
  """
  args = typing.get_args(kind)
  if type(None) in args:  # Optional[X]
    return None if value is None else from_json(value, args[0], path, where,
                                                advice)
  if dataclasses.is_dataclass(kind):
    return _dataclass(value, kind, path, where, advice)
  origin = typing.get_origin(kind)
  if origin is tuple:
    items = expect(value, list, path, where, advice)
    if args[-1] is Ellipsis:  # Tuple[X, ...]
      args = (args[0],) * len(items)
    elif len(items) != len(args):  # Tuple[X, Y]
      fail(path, where, f'has {len(items)} values, not {len(args)}', advice)
    return tuple(from_json(item, arg, path, f'{where}[{i}]', advice)
                 for i, (item, arg) in enumerate(zip(items, args)))
  if origin is collections.abc.Mapping:  # Mapping[str, X]
    return {key: from_json(item, args[1], path, _join(where, key), advice)
            for key, item in expect(value, dict, path, where, advice).items()}
  value = expect(value, kind, path, where, advice)
  if kind is int and value < 0:
    fail(path, where, f'is {value}, not {_EXPECTED[int]}', advice)
  return value


def _dataclass(value, cls, path: str, where: str, advice: str):
  """A dataclass from its JSON object: every stored field but optional ones."""
  data = expect(value, dict, path, where, advice)
  types_ = typing.get_type_hints(cls)
  for key, f in stored_fields(cls):
    if key not in data and not f.metadata.get('optional'):
      fail(path, where, f'has no {key!r}', advice)
  return cls(**{f.name: from_json(data[key], types_[f.name], path,
                                  _join(where, key), advice)
                for key, f in stored_fields(cls) if key in data})


def expect(value, kind: type, path: str, where: str = '', advice: str = ''):
  """value, when it is of JSON type kind (a bool is no number); else fails."""
  if (not isinstance(value, (int, float) if kind is float else kind)
      or (isinstance(value, bool) and kind is not bool)):
    fail(path, where, f'is {_describe(value)}, not {_EXPECTED[kind]}', advice)
  return value


def fail(path: str, where: str, problem: str, advice: str = ''):
  """Raises the one-line error: `path: where problem; advice`."""
  advice = f'; {advice}' if advice else ''
  raise cli.UserError(f'{path}: {where or "the top level"} {problem}{advice}')


def _join(where: str, key: str) -> str:
  return f'{where}.{key}' if where else key


def _describe(value) -> str:
  """A JSON value for a message: its type, and the value when short."""
  kinds = {dict: 'an object', list: 'a list', str: 'a string', bool: 'a bool',
           int: 'a number', float: 'a number', type(None): 'null'}
  kind = kinds.get(type(value), type(value).__name__)
  if isinstance(value, (dict, list)) or value is None:
    return kind
  text = json.dumps(value)
  return f'{text[:40]}{"…" if len(text) > 40 else ""} ({kind})'
