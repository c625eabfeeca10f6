"""The run report: one self-contained HTML page (:mod:`cae_ray.report.page`) and its figures
(:mod:`cae_ray.report.figures`)."""
