"""DistDNAS: distributed differentiable search over data-date shards on Ray actors."""
