"""The rule library as data: detector configurations (`configs/*.toml`) and reference rules
(`packages.toml`), loaded and validated by `models.rules.config`."""
