"""Reports built from runs: scaling tables and figures from ReFrame perflogs, transfer tables."""
