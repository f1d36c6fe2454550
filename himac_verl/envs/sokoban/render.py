"""A small numpy renderer: one flat-colour tile per cell, e.g. 6x6 cells of 16 px -> 96x96x3 uint8, or a
frame of a given size (``image_px``, the env's default 256: 6x6 cells -> 256x256x3).

A vision model needs the bigger frame: Qwen2-VL/Qwen2.5-VL's image processor cuts an image into 14 px
patches and merges 2x2 of them per visual token, so a 96x96 board (resized to 84x84) is 9 visual tokens for
36 cells, and a 256x256 one (252x252) is 81.

Tiles are drawn once per tile size and composed by fancy indexing, so a frame costs one gather, not a
loop over cells. A frame of a given size is drawn with tiles of ``ceil(image_px / cells)`` px and brought to
the exact size by nearest-neighbour sampling (each tile 1 px narrower or not): the edges stay crisp and
every pixel keeps one of the tile colours.

Colours follow gym-sokoban's look loosely (brown walls, a box, a red target mark, a green box on a target,
a blue player) and are chosen to stay distinct for a vision model.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from himac_verl.envs.sokoban.level import BOX, BOX_ON_TARGET, FLOOR, PLAYER, PLAYER_ON_TARGET, TARGET, WALL

TILE_ORDER: tuple[str, ...] = (WALL, FLOOR, TARGET, BOX, BOX_ON_TARGET, PLAYER, PLAYER_ON_TARGET)
_CODE = {sym: i for i, sym in enumerate(TILE_ORDER)}

_WALL = (120, 64, 32)
_MORTAR = (80, 40, 20)
_FLOOR = (40, 40, 40)
_TARGET = (220, 40, 40)
_BOX = (200, 150, 50)
_BOX_EDGE = (110, 70, 20)
_BOX_DONE = (60, 180, 60)
_PLAYER = (60, 120, 230)


@lru_cache(maxsize=8)
def tiles(px: int) -> np.ndarray:
    """The 7 tiles in ``TILE_ORDER``: uint8 [7, px, px, 3]."""
    if px < 4:
        raise ValueError(f"tile size px must be >= 4, got {px!r}")
    t = np.zeros((len(TILE_ORDER), px, px, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:px, 0:px]
    centre = (px - 1) / 2.0
    dist = np.maximum(abs(yy - centre), abs(xx - centre))  # square rings
    disc = (yy - centre) ** 2 + (xx - centre) ** 2 <= (px * 0.32) ** 2
    edge = dist > px * 0.5 - max(1, px // 8) - 0.5

    wall = t[_CODE[WALL]]
    wall[:] = _WALL
    wall[(yy % max(2, px // 2)) == 0] = _MORTAR  # brick courses

    for code in (_CODE[FLOOR], _CODE[TARGET], _CODE[PLAYER], _CODE[PLAYER_ON_TARGET]):
        t[code][:] = _FLOOR
    target_ring = (dist <= px * 0.3) & (dist >= px * 0.3 - max(1, px // 8))
    t[_CODE[TARGET]][target_ring] = _TARGET
    t[_CODE[PLAYER_ON_TARGET]][target_ring] = _TARGET

    for code, fill in ((_CODE[BOX], _BOX), (_CODE[BOX_ON_TARGET], _BOX_DONE)):
        box = t[code]
        box[:] = _FLOOR
        inner = dist <= px * 0.5 - 1
        box[inner] = fill
        box[inner & edge] = _BOX_EDGE
    t[_CODE[PLAYER]][disc] = _PLAYER
    t[_CODE[PLAYER_ON_TARGET]][disc] = _PLAYER
    return t


def render_rgb(grid_text: str, px: int = 16, image_px: int | None = None) -> np.ndarray:
    """RGB image of a grid written in the level symbols, uint8.

    ``image_px=None``: tiles of ``px`` px, shape [rows*px, cols*px, 3]. Else the image's shorter side is
    ``image_px`` and its longer side keeps the board's aspect (``round(cells * image_px / shorter cells)``):
    a square board gives [image_px, image_px, 3]; ``px`` is then unused.
    """
    rows = grid_text.split("\n")
    h, w = len(rows), len(rows[0])
    codes = np.fromiter((_CODE[ch] for row in rows for ch in row), dtype=np.intp, count=h * w).reshape(h, w)
    if image_px is not None:
        if image_px < 1:
            raise ValueError(f"image_px must be >= 1, got {image_px!r}")
        px = max(4, -(-image_px // min(h, w)))
    img = tiles(px)[codes]  # [h, w, px, px, 3]
    img = img.transpose(0, 2, 1, 3, 4).reshape(h * px, w * px, 3)
    if image_px is not None:
        scale = image_px / min(h, w)
        out_h, out_w = round(h * scale), round(w * scale)
        if (out_h, out_w) != img.shape[:2]:
            img = img[_nearest(img.shape[0], out_h)][:, _nearest(img.shape[1], out_w)]
    return np.ascontiguousarray(img)


def _nearest(size: int, out: int) -> np.ndarray:
    """Source index of each of ``out`` samples of a ``size``-long axis (nearest neighbour, pixel centres)."""
    return np.minimum(((np.arange(out) + 0.5) * size / out).astype(np.intp), size - 1)
