"""The iBUG 68-point convention: facial parts, their drawing colours and the mirror permutation.

Indices follow the 300-W / iBUG annotation used by dlib and face-alignment.
"Right"/"left" are the subject's right/left (the right eye is on the image's left in a frontal face).
"""
from __future__ import annotations

import numpy as np

NUM_POINTS = 68

# name -> (point indices, closed polyline?, RGB colour). Colours are distinct per part so that the
# generator can tell parts apart (Zakharov et al. 2019 draw each part in its own colour).
PARTS: dict[str, tuple[tuple[int, ...], bool, tuple[int, int, int]]] = {
    "jaw": (tuple(range(0, 17)), False, (255, 255, 255)),
    "right_brow": (tuple(range(17, 22)), False, (255, 128, 0)),
    "left_brow": (tuple(range(22, 27)), False, (255, 255, 0)),
    "nose_bridge": (tuple(range(27, 31)), False, (0, 0, 255)),
    "nostrils": (tuple(range(31, 36)), False, (0, 128, 255)),  # 31-35; the bridge ends at the tip, 30
    "right_eye": (tuple(range(36, 42)), True, (0, 255, 0)),
    "left_eye": (tuple(range(42, 48)), True, (0, 255, 128)),
    "outer_lips": (tuple(range(48, 60)), True, (255, 0, 0)),
    "inner_lips": (tuple(range(60, 68)), True, (255, 0, 255)),
}

RIGHT_EYE = np.arange(36, 42)
LEFT_EYE = np.arange(42, 48)
MOUTH = np.arange(48, 68)
INNER_LIPS = np.arange(60, 68)


def _mirror_permutation() -> np.ndarray:
    pairs = [(i, 16 - i) for i in range(17)]                       # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]                  # brows
    pairs += [(27, 27), (28, 28), (29, 29), (30, 30)]               # nose bridge
    pairs += [(31, 35), (32, 34), (33, 33)]                        # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (51, 51), (55, 59), (56, 58), (57, 57)]  # outer lips
    pairs += [(60, 64), (61, 63), (62, 62), (65, 67), (66, 66)]    # inner lips
    perm = np.full(NUM_POINTS, -1, dtype=np.int64)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    assert (perm >= 0).all() and sorted(perm.tolist()) == list(range(NUM_POINTS))
    return perm


MIRROR_PERMUTATION = _mirror_permutation()
"""``points_mirrored = flip_x(points)[MIRROR_PERMUTATION]`` keeps each index on its semantic part."""


def segments() -> np.ndarray:
    """All line segments of the drawing as ``(S, 2)`` index pairs, with a ``(S, 3)`` colour array."""
    idx, col = [], []
    for ids, closed, colour in PARTS.values():
        ids = list(ids)
        chain = list(zip(ids[:-1], ids[1:]))
        if closed:
            chain.append((ids[-1], ids[0]))
        idx += chain
        col += [colour] * len(chain)
    return np.asarray(idx, dtype=np.int64), np.asarray(col, dtype=np.uint8)
