"""The steps of a run that read and write its run directory: ``prepare`` (the packed splits),
``select`` (the selector trained on Ray, the final K) and ``validate`` (the gate on held-out
rows). Export, prune and retire are Feast's, in :mod:`cae_ray.feast`; the pipeline hub
(:mod:`cae_ray.pipeline`) calls them all in order."""
