"""What every task's scoring shares, without verifiers: the one completion-text reader and the JSON-object search.
Each task's own parser and reward live in its package (sv_soar/tasks/e1/scoring.py, e2/scoring.py); rubrics/ wraps
them as verifiers parsers and rubrics for the environments."""
