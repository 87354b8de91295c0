"""Read-only result tables (landmarks, segment statistics, similar cases), filled the same way everywhere."""

from __future__ import annotations

from collections.abc import Sequence

import qt


def setColumns(table, labels: Sequence[str]) -> None:
    """Column headers; the last column takes the remaining width."""
    table.setColumnCount(len(labels))
    table.setHorizontalHeaderLabels(list(labels))
    table.horizontalHeader().setStretchLastSection(True)


def setRow(table, row: int, cells: Sequence, toolTip: str = "") -> None:
    """One row of selectable, non-editable cells: a str becomes a text item, a QTableWidgetItem is used as is."""
    for col, cell in enumerate(cells):
        item = cell if isinstance(cell, qt.QTableWidgetItem) else qt.QTableWidgetItem(str(cell))
        item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
        if toolTip:
            item.setToolTip(toolTip)
        table.setItem(row, col, item)
