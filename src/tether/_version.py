"""tether's version, written in this one place.

setuptools reads it from here into the package metadata (pyproject.toml,
``[tool.setuptools.dynamic]``) and ``tether.__version__`` re-exports it, so
the two cannot disagree. A module of its own, without imports, so that the
build can read it without importing tether.
"""

__version__ = "0.1.0"
