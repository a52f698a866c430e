"""Tables and plots from the suite's run records (see analysis/report.py)."""
