"""sv-soar: SOAR curriculum generation (arXiv 2601.18778) for the Security Verifiers benchmark."""

import os

# OpenMP threads that spin while waiting for work make torch 5-40x slower on a shared 2-core machine
# (measured with the transformers engine while other processes ran); passive waiting costs nothing
# when the machine is idle. Set before torch is imported; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
