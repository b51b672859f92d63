"""The sink: Kafka topics -> ClickHouse tables, in batches, committing only stored offsets."""
