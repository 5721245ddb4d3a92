"""Shared test set-up: the precision that --precision=auto picks here.

Machines of this kind differ: CPUs with avx512_bf16/amx_bf16 train under
mixed_bfloat16, others under float32. The suite must pass under both, so it
can be forced either way on one machine (POSTERNET_PRECISION, which
--precision=auto obeys in every process the tests start):

  make test PRECISION=float32
  make test PRECISION=mixed_bfloat16
"""

from posternet import hardware


def pytest_report_header(config):
  del config  # unused
  policy, reason = hardware.precision_here('auto')
  return f'posternet: --precision=auto is {policy} ({reason})'
