"""Output files: summary.json (atomic) and the Arrow steps/events/gpus tables (streamed, then finalised)."""
