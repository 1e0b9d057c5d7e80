"""The launcher: the `rankitect` CLI (and, later, configs, the gRPC service and the Ray connection)."""
