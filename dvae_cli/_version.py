"""The version of dvae, in one place: the package, `dvae --version`, run records and pyproject read it.

Owns: the version. Must not: import anything."""

__version__ = "0.1.0"
