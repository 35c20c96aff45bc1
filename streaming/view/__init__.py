"""`libs-stream view`: the live map, spectra and stream health in a browser (docs/streaming.md, "Live view")."""
