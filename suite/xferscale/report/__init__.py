"""Reports: transfer results beside the paper's tables and figures, scaling from ReFrame perflogs, proximity."""
