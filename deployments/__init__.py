"""Ray Serve deployments: the HTTP ingress, the model servers, and the app builders."""
