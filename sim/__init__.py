"""twinplume's simulated LIBS bench (physics only; no instrument protocol here).

Modules: ``sample`` (a synthetic pegmatite defined everywhere on the plane),
``lines`` (line table and atomic data), ``plasma`` (Saha-Boltzmann emission in
a cooling plume, gated), ``spectrograph`` (Czerny-Turner systems and detector
noise), ``scene`` (``PairedScene``: one plasma seen by both systems),
``generate`` (paired maps through the store; ``libs-sim generate``) and
``cli`` (``libs-sim``). The equations and parameter sources are in
docs/simulation.md.
"""
