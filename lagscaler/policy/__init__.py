"""Per-workload policy files: the typed model, the JSON Schema and the YAML loader."""
