"""Throughput and latency benchmark of the mediator against a bare Python hop (see BENCHMARKS.md)."""
