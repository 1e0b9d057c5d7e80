"""The top layer: what users run. `cli` (the `rankitect` command and its `cmd_*` modules),
`config_file` (YAML configs with --set overrides), `cmd_launch` (Ray Jobs API), `rpc/` (the gRPC
server, client and converters; generated stubs in rpc/gen) and `jobs/` (`rankitect serve`'s job
store, runner and job driver). It is an entry point: it sets the environment a local Ray needs
before Ray is imported (rankitect.experiment.ray_env)."""
