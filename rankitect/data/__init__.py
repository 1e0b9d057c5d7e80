"""Datasets: date-partitioned parquet + schema.json; importers, generator, streaming loader."""
