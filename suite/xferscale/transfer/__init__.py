"""Fine-tuning with the BiT-HyperRule: targets, few-shot subsets, the loop and the grid."""
