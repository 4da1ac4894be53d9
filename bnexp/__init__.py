"""bnexp: Batch Normalization ablation studies from one Hydra command."""
__version__ = "0.1.0"
