"""HTTP beside the gRPC port of `rankitect serve`: the JSON API (api.py) and its server."""
