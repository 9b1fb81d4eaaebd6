"""OpenTelemetry metrics: the instruments, their exporters and snapshot files."""
