"""Entry points and orchestrator adapters around :func:`cae_ray.pipeline.run`.

Not installed with the ``cae_ray`` package: these files are run from a checkout (or the
image's ``/app``), e.g. ``python pipelines/ray_job.py`` or ``dagster dev -m pipelines.dagster_job``.
They hold no logic of their own: every step lives in ``cae_ray.pipeline``.
"""
