"""posternet.settings: each setting declared once, its flag made from it."""

import dataclasses
from typing import Optional, Tuple

from absl import flags
import pytest

from posternet import cli
from posternet import settings
from posternet.data import shard_plan
from posternet.train import config as train_config

# Every settings tree a command builds its flags from.
TREES = (train_config.Config, shard_plan.Options)


@pytest.mark.parametrize('tree', TREES, ids=lambda t: t.__name__)
def test_every_leaf_is_a_flag_with_its_default_and_help(tree):
  values = flags.FlagValues()
  settings.define_flags(tree, values)
  values(['command'])
  for leaf in settings.leaves(tree):
    flag = values[leaf.name]
    assert leaf.metadata['help'].strip() and flag.help.endswith(
        leaf.metadata['help'])  # an enum's help starts <a|b>:
    default = None if leaf.default is settings.REQUIRED else leaf.default
    text = leaf.metadata['text']
    if leaf.metadata['parse'] and default is not None:
      assert flag.default == text(default), leaf.name
    elif leaf.metadata['choices']:
      assert flag.default == (None if default is None else text(default))
    else:
      assert flag.default == default, leaf.name
  # The flags give back the tree's defaults.
  if tree is shard_plan.Options:
    assert settings.from_flags(tree, values) == tree()


@dataclasses.dataclass(frozen=True)
class _Inner:
  rate: float = settings.setting(0.5, 'A rate.', minimum=0)
  mode: str = settings.setting('a', 'A mode.', choices=('a', 'b'))


@dataclasses.dataclass(frozen=True)
class _Outer:
  name: str = settings.setting(settings.REQUIRED, 'A name.')
  size: Optional[Tuple[int, int]] = settings.setting(
      None, 'A size.', parse=cli.parse_size, text=cli.size_text)
  inner: _Inner = settings.group(_Inner)


def test_flags_parse_into_the_tree_and_back_to_a_flagfile():
  values = flags.FlagValues()
  settings.define_flags(_Outer, values)
  values(['command', '--name=x', '--size=4x3', '--mode=b'])
  tree = settings.from_flags(_Outer, values)
  assert tree == _Outer(name='x', size=(4, 3), inner=_Inner(mode='b'))
  assert settings.flat(tree) == {'name': 'x', 'size': (4, 3), 'rate': 0.5,
                                 'mode': 'b'}
  assert settings.flags_text(_Outer, values).splitlines() == [
      '--name=x', '--size=4x3', '--rate=0.5', '--mode=b']


def test_check_names_the_flag_out_of_its_choices_or_bounds():
  tree = settings.build(_Outer, name='x', rate=-1.0, mode='c')
  assert settings.check(tree) == [
      ('rate', '--rate must be at least 0, not -1.0'),
      ('mode', '--mode=c: choose one of a, b')]
  assert settings.check(settings.build(_Outer, name='x')) == []
