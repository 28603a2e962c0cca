"""Output files: summary.json now; the Arrow step/GPU/event streams arrive with the fleet engine."""
