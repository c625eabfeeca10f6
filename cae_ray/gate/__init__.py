"""The validation gate: does a model on the K selected features match the all-features
baseline? The flow (:mod:`cae_ray.gate.validate`), the models it fits, and the metrics and
intervals it decides with."""
