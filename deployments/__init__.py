"""The Ray Serve side: the app builders serve_config.yaml imports and the deployments they bind.

The HTTP ingress (with its admission gate, upload reader, OpenAPI document and Predict page, whose
files are in static/), the batched model servers and their PyTorch or ONNX Runtime backends, the
cluster-wide rate limiter, the proxy's edge guard and the Prometheus metrics.
"""
