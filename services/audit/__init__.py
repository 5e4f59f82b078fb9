"""audit: turning tool-call events into OpenTelemetry records."""
