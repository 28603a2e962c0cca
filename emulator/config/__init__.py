"""The config edge: YAML mappings and Hydra DictConfigs become a validated JobSpec here."""
