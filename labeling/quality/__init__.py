"""Data quality statistics: pure numpy/scipy/pandas, no Django (see stats.py and report.py)."""
