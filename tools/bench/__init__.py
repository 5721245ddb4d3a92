"""The prefetch benchmark's measuring code; tools/prefetch_bench.py is its command."""
