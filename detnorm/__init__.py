"""detnorm: Mask R-CNN with a pluggable normalization layer in each part of the model."""

__version__ = "0.1.0"
__all__ = ["Prediction", "Predictor"]


def __getattr__(name: str):
    """``detnorm.Predictor`` / ``detnorm.Prediction``, imported on first use (torch is heavy)."""
    if name in __all__:
        from detnorm.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'detnorm' has no attribute {name!r}")
