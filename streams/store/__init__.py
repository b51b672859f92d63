"""The ClickHouse store: table definitions, the client, and the embedded-store owner endpoint."""
