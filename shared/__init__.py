"""Pure, Ray-free building blocks shared by the ingress and the model deployments."""
