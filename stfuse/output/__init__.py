"""Work and files out: halo-overlapping dask tiles (:mod:`.tiling`) and the writers and readers
of COGs, STAC items and Zarr stores (:mod:`.io`)."""
