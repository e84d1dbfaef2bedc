"""Norm layers with no Mask R-CNN knowledge: the norm vocabulary, SyncBN, weight-standardized
convolutions, PreciseBN's statistics update and module replacement."""
