"""The simulated bench and the real drivers on its transports (tests/fixtures/emulated.py)."""

from tests.fixtures.emulated import bench, rig, scene  # noqa: F401 (fixtures)
