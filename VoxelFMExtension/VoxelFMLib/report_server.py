"""What a report drafted on a VoxelFM server needs from the scene: the measured segments as label layers.

The server measures segments itself (``SegmentationData.measurements``); sending each segment's own binary
labelmap (the very mask ``segment_measurements.measure_segmentation`` measured, on its own grid) makes its
measurements, and so the draft, equal to the ones made here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from voxelfm.errors import InputError
from voxelfm.imaging.volume import Volume
from voxelfm.report.measurements import SegmentMeasurement
from voxelfm.report.segmentation_files import SegmentationData, SegmentRef

from .segment_measurements import segment_mask


def server_segmentation(
    nodes: Sequence[Any], measured: Sequence[SegmentMeasurement]
) -> SegmentationData | None:
    """One label layer (value 1) per measured segment of one segmentation node; None when none was measured."""
    if not measured:
        return None
    sources = {m.source for m in measured}
    if len(sources) > 1:
        raise InputError(
            "A report drafted on the server takes one segmentation node; choose one, or draft on this computer."
        )
    node = next(n for n in nodes if n is not None and n.GetID() in sources)
    layers, refs = [], []
    for m in measured:
        mask, ijk_to_ras = segment_mask(node, m.segment_id)
        refs.append(SegmentRef(m.name, m.segment_id, len(layers), 1))
        layers.append(Volume(mask.astype(np.uint8), ijk_to_ras, node.GetName()))
    return SegmentationData(layers, refs, node.GetID())
