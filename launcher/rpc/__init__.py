"""The gRPC service of `rankitect serve`: stubs (gen/), converters, server, client, errors.

- `server.build_server(options, services)` assembles a grpc.Server with the guard interceptor
  (auth, malformed requests, error mapping), health and reflection.
- `registry_service.BlockRegistryService` serves rankitect.blocks' registry.
- `client.RankitectClient` is the Python client; `errors` maps statuses to CLI exit codes.
"""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
