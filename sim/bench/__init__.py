"""The simulated LIBS bench: instrument emulators, plasma and spectrometers on one clock.

See :mod:`sim.bench.bench` for the physics and the clock semantics.
"""

from sim.bench.bench import SimulatedBench
from sim.bench.engine import FiredShot
from sim.bench.faults import BenchFaults, BenchFaultsError
from sim.bench.spectrometers import SimulatedSpectrometer
from sim.bench.timing import BenchWiring

__all__ = ["BenchFaults", "BenchFaultsError", "BenchWiring", "FiredShot", "SimulatedBench",
           "SimulatedSpectrometer"]
