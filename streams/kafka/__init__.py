"""Thin wrappers over confluent-kafka: one place that builds producers, consumers and admins."""
