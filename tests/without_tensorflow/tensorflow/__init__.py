"""Stands in for TensorFlow in the JAX test pass, as if it were not installed (tests/conftest.py)."""

raise ImportError("TensorFlow is not installed here: the JAX test pass runs as a venv without it would")
