"""How an event is judged: detectors (rules and online models) as plain Python, no I/O."""
