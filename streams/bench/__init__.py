"""`fundwatch bench`: the performance of every path, measured in one run on this machine.

Modules, one per measured path: `inprocess` (the floor: consume + decode; the detectors over
decoded events; the worker's batch logic over a dict table; the state they keep), `live` (a
worker subprocess and the sink, latency to ClickHouse), `latency` (the produce-time join and
percentiles), `workload` (the seeded world and the benchmark's own topics), `report` (JSON and
tables), `cli`. The replay figure is `fundwatch backtest`'s own judging loop (streams/backtest).
"""
