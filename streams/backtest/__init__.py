"""`fundwatch backtest`: replay history through a rule configuration, apart from the live
pipeline, and compare it with labels, reviews and a baseline configuration (docs/backtest.md)."""
