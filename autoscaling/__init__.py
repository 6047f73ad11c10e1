"""Autoscaling for model deployments: named presets and a queue-based custom policy."""
