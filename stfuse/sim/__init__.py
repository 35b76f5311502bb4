"""Simulated data: the scene simulator (:mod:`.synth`), the sample STAC catalog it writes
(:mod:`.sample`), the simulated days the refiner is trained and the variances are calibrated on
(:mod:`.days`) and loopback servers for tests (:mod:`.testing`)."""
