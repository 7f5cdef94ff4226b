"""Receiving records from audited processes: sequence checks, sinks, summaries."""
