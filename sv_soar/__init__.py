"""sv-soar: SOAR curriculum generation (arXiv 2601.18778) for the Security Verifiers benchmark."""

__version__ = "0.1.0"
