"""The paired-map HDF5 store (spec/paired-map-hdf5.md): write, resume, read, validate.

Importable without drivers or simulation. Design and guarantees: docs/store.md.
"""

from .derived import finite_threshold, remove_transferred_trust, write_transferred, write_transferred_trust
from .layout import (FORMAT, FORMAT_VERSION, MapLayout, MapWriteError, PairedMapError, PairedMapFormatError,
                     PairedMapMismatchError)
from .reader import Chunk, PairedMapReader, validate
from .writer import PairedMapWriter

__all__ = [
    "FORMAT", "FORMAT_VERSION", "MapLayout", "MapWriteError", "PairedMapError", "PairedMapFormatError",
    "PairedMapMismatchError", "Chunk", "PairedMapReader", "PairedMapWriter", "validate", "write_transferred",
    "write_transferred_trust", "remove_transferred_trust", "finite_threshold",
]
