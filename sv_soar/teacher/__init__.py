"""The teacher's side of SOAR without verifiers: its prompt, parsing and validating the problems it writes,
the hard-set contamination guard and the diversity of its questions."""
