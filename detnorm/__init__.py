"""detnorm: Mask R-CNN with a pluggable normalization layer in each part of the model."""

__version__ = "0.1.0"
