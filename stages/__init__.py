"""The pipeline's stages. Importing the package keeps TensorFlow's start-up lines out of every stage's output."""

from stages.cli import quiet_tensorflow_startup

quiet_tensorflow_startup()
