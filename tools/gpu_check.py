"""`python -m tools.gpu_check`: the command of posternet.bench.gpu_check."""

from posternet.bench import gpu_check

if __name__ == '__main__':
  gpu_check.entry()
