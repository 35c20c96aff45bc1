"""The names of the two spectrometer systems of a paired map, in file order.

``primary`` is the broad system whose space spectra are transferred into, ``secondary``
the narrower one whose spectra are transferred (spec/paired-map-hdf5.md). Every package
takes the names from here.
"""

SYSTEM_NAMES = ("primary", "secondary")
