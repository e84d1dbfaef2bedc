"""Looking at results: comparing runs, plots, drawing predictions, error analysis and dataset
statistics."""
