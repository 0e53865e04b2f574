"""The deployment files (Dockerfile, compose.yaml, k8s/) checked by the validators a user
would run and held to the program they deploy: its options, roles, routes and metrics."""
