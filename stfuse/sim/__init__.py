"""Simulated data: the scene simulator (:mod:`.synth`), the sample STAC catalog it writes
(:mod:`.sample`) and loopback servers for tests (:mod:`.testing`)."""
