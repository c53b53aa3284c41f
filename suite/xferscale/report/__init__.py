"""Reports: transfer results beside the paper's tables and figures, scaling fits, proximity."""
