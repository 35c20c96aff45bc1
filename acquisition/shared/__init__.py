"""The shared leaf: small torch-free helpers every package may import.

Together with :mod:`acquisition.store` (the paired-map file), this package is
the only part of ``acquisition`` that ``sim``, ``transfer`` and ``streaming``
may import; the import-linter contracts in ``pyproject.toml`` check that.
It imports nothing from the project outside itself and the store.
"""
