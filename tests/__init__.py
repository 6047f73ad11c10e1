"""The test suite: end-to-end tests against one real Ray Serve instance (conftest.py) with their
helpers (an in-process Ultralytics oracle, sample images, traffic, fault-injection deployments,
cluster probes), and fast Ray-free unit tests in unit/."""
