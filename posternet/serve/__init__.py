"""Serving: the export, and the evaluate and predict commands on it."""
