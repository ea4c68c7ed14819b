"""RegionBLIP in PyTorch: the model, datasets, trainer and evaluation (research/offline side)."""
