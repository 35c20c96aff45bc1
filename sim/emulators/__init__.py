"""Wire-protocol emulators of the bench instruments (DG645, Big Sky laser, Zaber stage).

Each emulator is a device state model plus a line-based protocol handler; the
transports in :mod:`sim.emulators.transports` put one on a loopback TCP socket
or a pseudo-terminal so that the real drivers talk to it through pyvisa.
"""
