"""Binary masks as COCO polygons, traced along pixel edges (no OpenCV needed).

``mask_to_polygons(mask)`` returns one polygon per 4-connected component of the mask, as COCO lists
``[x1, y1, x2, y2, ...]`` whose vertices are pixel corners (pixel ``(x, y)`` covers
``[x, x+1] x [y, y+1]``), or ``None`` when the mask has a hole: COCO polygons of one object are
unioned, so a hole cannot be written as a polygon and the object needs RLE instead.
"""

from __future__ import annotations

import numpy as np

# Directed edges around a foreground pixel, clockwise on screen (x right, y down), for the four sides
# whose neighbour is background: (neighbour offset dy, dx), (start corner), (end corner).
_SIDES = (
    ((-1, 0), (0, 0), (1, 0)),  # top: left -> right
    ((0, 1), (1, 0), (1, 1)),  # right: top -> bottom
    ((1, 0), (1, 1), (0, 1)),  # bottom: right -> left
    ((0, -1), (0, 1), (0, 0)),  # left: bottom -> top
)


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end corners ``(x, y)`` of every foreground/background pixel edge."""
    padded = np.pad(mask.astype(bool), 1)
    h, w = mask.shape
    starts, ends = [], []
    for (dy, dx), (sx, sy), (ex, ey) in _SIDES:
        neighbour = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        ys, xs = np.nonzero(mask & ~neighbour)
        starts.append(np.stack([xs + sx, ys + sy], axis=1))
        ends.append(np.stack([xs + ex, ys + ey], axis=1))
    return np.concatenate(starts), np.concatenate(ends)


def _trace_loops(starts: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """Chain edges into closed loops. Where two loops touch at a corner, turn right (keeps 4-connected
    components apart, so every loop is simple)."""
    start_xy = [tuple(p) for p in starts.tolist()]
    end_xy = [tuple(p) for p in ends.tolist()]
    outgoing: dict[tuple[int, int], list[int]] = {}
    for i, xy in enumerate(start_xy):
        outgoing.setdefault(xy, []).append(i)
    used = [False] * len(start_xy)
    loops = []
    for first in range(len(start_xy)):
        if used[first]:
            continue
        loop, edge = [], first
        while not used[edge]:
            used[edge] = True
            (sx, sy), (ex, ey) = start_xy[edge], end_xy[edge]
            loop.append((sx, sy))
            candidates = [e for e in outgoing[(ex, ey)] if not used[e]]
            if not candidates:
                break
            # cross(d, e) = +1 is a right turn on screen (y down): prefer right, then straight, then left
            dx, dy = ex - sx, ey - sy
            edge = max(candidates, key=lambda e: dx * (end_xy[e][1] - ey) - dy * (end_xy[e][0] - ex))
        loops.append(np.array(loop))
    return loops


def _drop_collinear(loop: np.ndarray) -> np.ndarray:
    a, b = loop - np.roll(loop, 1, axis=0), np.roll(loop, -1, axis=0) - loop
    return loop[a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0] != 0]


def signed_area(loop: np.ndarray) -> float:
    """Shoelace area on screen coordinates: positive for outer boundaries, negative for holes."""
    x, y = loop[:, 0].astype(np.float64), loop[:, 1].astype(np.float64)
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def mask_to_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """COCO polygons of a boolean ``[H, W]`` mask, one per 4-connected component; ``None`` if it has a hole."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    loops = _trace_loops(*_boundary_edges(mask))
    if any(signed_area(loop) < 0 for loop in loops):
        return None
    return [_drop_collinear(loop).astype(float).reshape(-1).tolist() for loop in loops]
