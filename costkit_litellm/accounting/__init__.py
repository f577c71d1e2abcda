"""FinOps accounting: usage events to Prometheus metrics and the durable ledger."""
