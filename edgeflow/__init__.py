"""edgeflow: edge-cloud split inference.

    from edgeflow import partition
    p = partition(model, example_input)
    slices = p.split([p.cuts[3], p.cuts[10]])
"""

from edgeflow.core.partition import CutInfo, Partition, TensorInfo, compose, partition
from edgeflow.errors import (
    CodecError,
    EdgeflowError,
    PartitionError,
)

__all__ = [
    "partition",
    "Partition",
    "CutInfo",
    "TensorInfo",
    "compose",
    "EdgeflowError",
    "PartitionError",
    "CodecError",
]
__version__ = "0.1.0"
