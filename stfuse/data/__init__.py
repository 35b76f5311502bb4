"""Data in: sensor tables (:mod:`.sensors`), STAC search (:mod:`.catalog`) and lazy cubes on one
30 m grid with their Zarr cache (:mod:`.cube`)."""
