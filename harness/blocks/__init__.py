"""Shared block-level machinery: input capture, the block-by-block loop, statistics collectors,
mask helpers, sparsity allocators and sparsity measurement."""
