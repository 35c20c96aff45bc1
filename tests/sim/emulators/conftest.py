"""The emulators on real transports, driven by the real drivers (tests/fixtures/emulated.py)."""

from tests.fixtures.emulated import (dg645, dg645_emulator, dg645_server, faults, laser,  # noqa: F401 (fixtures)
                                     laser_emulator, laser_server, stage, stage_clock, stage_emulator,
                                     stage_server, visa_rm)
