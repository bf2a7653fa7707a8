"""Reports built from engine results: hit-rate aggregation and the replay report."""
