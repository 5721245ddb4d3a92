"""The prefetch benchmark and the GPU check: tools/prefetch_bench.py and
tools/gpu_check.py are their commands."""
