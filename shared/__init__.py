"""Plain, Ray-free Python the deployments and the command line share.

Request handling (parameters, uploads' limits, image decoding, results, errors, timing), API keys
and rate-limit arithmetic, the model registry and its weights, and the `yolo-endpoints` CLI with
the local cluster control behind `make serve`.
"""
