"""Data quality: gold items, agreement, rater reliability and position bias.

stats.py and report.py are the statistics, pure numpy/scipy/pandas with no Django; service.py stores their
figures and reads them back; views.py, api.py, charts.py and urls.py show them; weights.py turns them into
training and export weights.
"""
