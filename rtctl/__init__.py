"""rtctl, the rtbench controller: triggers runs and matrices of runs and reports
their results.
"""
