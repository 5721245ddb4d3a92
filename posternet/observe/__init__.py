"""Observing training: TensorBoard dashboards and the poster grids."""
