"""How events move and where state lives: Kafka clients, the sink, the simulator, the CLI."""
