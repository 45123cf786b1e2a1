"""Runs: turn options or a config into a run folder (data -> federated training -> attacks -> metrics).

Each experiment module here is what one CLI command calls; the CLI only parses options.
"""
