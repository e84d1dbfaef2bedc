"""Optimization: parameter groups (weight decay 0 on norms), SGD/AdamW, LR schedules."""
