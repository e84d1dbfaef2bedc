"""The Mask R-CNN: ResNet backbone (and its one freeze function), FPN, box and mask heads, the
input transform, and ``build_maskrcnn``."""
