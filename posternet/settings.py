"""Settings declared once: a dataclass field carries its default and help.

A command's settings are a tree of frozen dataclasses, as in ml_collections
or Keras' get_config: each leaf field is a `setting(default, help)`, each
branch a `group(SubSettings)` owned by the module that consumes it (the
optimizer's settings live in posternet.model.optim, the augmentation's in
posternet.data.augment). Everything else is made from the tree, so a default
or a help text is written in one place only:

  define_flags   one absl flag per leaf, named after the leaf's field (leaf
                 names are unique across the tree; the flags stay flat);
  from_flags     the tree that parsed flags describe (flag_values: its
                 leaves as a flat dict);
  build          the tree from flat keyword values (tests, library callers);
  flat           the tree as one flat dict (config.json, the HParams);
  check          the values outside a setting's choices or bounds.

The flag's type follows the field's annotation (bool, int, float, str,
Optional of these); a setting with `choices` is an enum flag, one with
`parse` a string flag whose text parse(text, name) turns into the value
(and `text` turns the default back into flag text).
"""

import dataclasses
import typing
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from absl import flags

# The default of a setting every run must give (a flag without a default).
REQUIRED = dataclasses.MISSING


def setting(default: Any, help: str, *,  # pylint: disable=redefined-builtin
            choices: Optional[Sequence[str]] = None,
            minimum: Optional[float] = None,
            parse: Optional[Callable[[str, str], Any]] = None,
            text: Callable[[Any], str] = str) -> Any:
  """A leaf of a settings tree: its default, flag help and checks."""
  return dataclasses.field(default=default, metadata={
      'help': help, 'choices': tuple(choices) if choices else None,
      'minimum': minimum, 'parse': parse, 'text': text})


def group(settings_class: type) -> Any:
  """A branch of a settings tree: a settings class of its own."""
  return dataclasses.field(default_factory=settings_class,
                           metadata={'group': settings_class})


def leaves(settings_class: type) -> Iterator[dataclasses.Field]:
  """The tree's leaf fields, depth first, in declaration order."""
  for field in dataclasses.fields(settings_class):
    if 'group' in field.metadata:
      yield from leaves(field.metadata['group'])
    else:
      yield field


def leaf_names(settings_class: type) -> tuple:
  """The flag names, in the tree's order (the order flags.txt lists them)."""
  return tuple(field.name for field in leaves(settings_class))


def define_flags(settings_class: type,
                 values: flags.FlagValues = flags.FLAGS) -> None:
  """One absl flag per leaf, with the leaf's default and help."""
  for field in leaves(settings_class):
    _define_flag(field, _leaf_type(settings_class, field.name), values)


def _define_flag(field: dataclasses.Field, kind: type,
                 values: flags.FlagValues) -> None:
  """The flag of one leaf: its type from the annotation or the metadata."""
  meta = field.metadata
  default = None if field.default is REQUIRED else field.default
  if meta['choices']:
    flags.DEFINE_enum(field.name, default, meta['choices'], meta['help'],
                      flag_values=values)
  elif meta['parse']:
    flags.DEFINE_string(field.name,
                        None if default is None else meta['text'](default),
                        meta['help'], flag_values=values)
  else:
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
              float: flags.DEFINE_float, str: flags.DEFINE_string}[kind]
    define(field.name, default, meta['help'], flag_values=values)


def _leaf_type(settings_class: type, name: str) -> type:
  """The leaf's annotated type, Optional[X] read as X."""
  for owner in _classes(settings_class):
    hints = typing.get_type_hints(owner)
    if name in hints and name in {f.name for f in dataclasses.fields(owner)}:
      kind = hints[name]
      args = [a for a in typing.get_args(kind) if a is not type(None)]
      return args[0] if typing.get_origin(kind) is typing.Union else kind
  raise KeyError(name)


def _classes(settings_class: type) -> Iterator[type]:
  """The tree's settings classes, the root first."""
  yield settings_class
  for field in dataclasses.fields(settings_class):
    if 'group' in field.metadata:
      yield from _classes(field.metadata['group'])


def flag_values(settings_class: type,
                values: flags.FlagValues) -> Dict[str, Any]:
  """The tree's leaf values from parsed flags, by name (parse applied)."""
  flat_values = {}
  for field in leaves(settings_class):
    value, parse = values[field.name].value, field.metadata['parse']
    flat_values[field.name] = (parse(value, field.name)
                               if parse and value is not None else value)
  return flat_values


def from_flags(settings_class: type, values: flags.FlagValues) -> Any:
  """The tree that parsed flag values describe."""
  return build(settings_class, **flag_values(settings_class, values))


def build(settings_class: type, **flat_values) -> Any:
  """The tree from flat leaf values; leaves not given keep their defaults.

  Raises:
    TypeError: a name that is no leaf of the tree.
  """
  unknown = set(flat_values) - set(leaf_names(settings_class))
  if unknown:
    raise TypeError(f'{settings_class.__name__} has no setting '
                    f'{", ".join(sorted(unknown))}')
  return _build(settings_class, flat_values)


def _build(settings_class: type, flat_values: Dict[str, Any]) -> Any:
  """build() below the check: each group from its own leaves."""
  kwargs = {}
  for field in dataclasses.fields(settings_class):
    if 'group' in field.metadata:
      kwargs[field.name] = _build(field.metadata['group'], flat_values)
    elif field.name in flat_values:
      kwargs[field.name] = flat_values[field.name]
  return settings_class(**kwargs)


def flat(settings: Any) -> Dict[str, Any]:
  """The tree's leaf values by name, one flat dict (config.json's row)."""
  row = {}
  for field in dataclasses.fields(settings):
    value = getattr(settings, field.name)
    row.update(flat(value) if 'group' in field.metadata
               else {field.name: value})
  return row


def check(settings: Any) -> List[Tuple[str, str]]:
  """(name, one-line error) per value outside its choices or bounds.

  The flags enforce choices already; trees built in code (build) do not
  pass through them, so the trainer checks every run's tree.
  """
  row, problems = flat(settings), []
  for field in leaves(type(settings)):
    value, meta = row[field.name], field.metadata
    if meta['choices'] and meta['text'](value) not in meta['choices']:
      problems.append((field.name, f'--{field.name}={value}: choose one of '
                       f'{", ".join(meta["choices"])}'))
    elif meta['minimum'] is not None and value is not None and (
        value < meta['minimum']):
      problems.append((field.name, f'--{field.name} must be at least '
                       f'{meta["minimum"]}, not {value}'))
  return problems


def flags_text(settings_class: type, values: flags.FlagValues,
               skip: Sequence[str] = ()) -> str:
  """The set flags as a flagfile, one per line in the tree's order."""
  return ''.join(f'{values[name].serialize()}\n'
                 for name in leaf_names(settings_class)
                 if values[name].value is not None and name not in skip)
