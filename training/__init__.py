"""RegionBLIP in PyTorch: the model, datasets, trainer and evaluation (the offline side)."""
