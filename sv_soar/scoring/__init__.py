"""Task scoring without verifiers: SV-Bench's E1 and E2 parsers and reward functions (rubrics/ wraps them
as verifiers parsers and rubrics for the environments)."""
