"""`python -m tools.prefetch_bench`: the command of posternet.bench.prefetch."""

from posternet.bench import prefetch

if __name__ == '__main__':
  prefetch.entry()
