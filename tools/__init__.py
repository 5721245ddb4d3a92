"""Command-line tools of posternet: the converter and the benchmarks."""
