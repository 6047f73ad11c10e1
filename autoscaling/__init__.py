"""Autoscaling for model deployments: the named presets endpoints choose in serve_config.yaml,
and the queue-based custom policy they use."""
