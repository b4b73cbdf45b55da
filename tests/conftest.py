"""Test-wide settings."""

import torch

# One intra-op thread per test process: CI has 2 cores and integration tests run agent processes beside
# pytest; oversubscribed OpenMP threads spin and slow everything down by an order of magnitude.
torch.set_num_threads(1)
