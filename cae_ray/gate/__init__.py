"""The validation gate's models and decision, without Ray: does a model on the K selected
features match the all-features baseline? The models it fits the same way on both
(:mod:`cae_ray.gate.models`), and the metrics and intervals it decides with
(:mod:`cae_ray.gate.metrics`). The flow over a run dir is :mod:`cae_ray.steps.validate`."""
