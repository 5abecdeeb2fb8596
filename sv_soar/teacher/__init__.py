"""What every task's teacher side shares, without verifiers: the checks of a problem the teacher writes (checks),
the hard-set contamination guard and the diversity of its questions. Each task's own prompt and problem parser live
in its package (sv_soar/tasks/e1/, e2/)."""
