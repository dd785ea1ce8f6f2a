"""``hierqdrant query --grid``: the query report as one PNG contact sheet (Pillow, no fonts needed).

Per query, one line per method: the query's thumbnail (with its leaf) at the left, then the hits, each
framed green when it is the query's class, red when not, grey when unknown, with its label and D below.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierqdrant.reports.cases import QueryCase, ReportHit
from hierqdrant.reports.thumbnails import thumbnail

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["contact_sheet", "write_grid"]

CELL = 96  # thumbnail edge
PAD = 6
TEXT = 24  # two lines of the default bitmap font under each cell
LABEL_W = 84  # the method's name left of its row
GREEN, RED, GREY = (46, 157, 99), (200, 60, 50), (190, 190, 190)


def _fit(text: str, width: int) -> str:
    """Text cut to about ``width`` pixels of the default font (≈ 6 px per character)."""
    chars = max(3, width // 6)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _font() -> Any:
    """Pillow's bundled font at 11 px (FreeType builds); the old bitmap font where there is no FreeType."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=11)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _cell(sheet: Image, x: int, y: int, path: Path | None, colour: tuple[int, int, int], lines: Sequence[str]) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(sheet)
    font = _font()
    draw.rectangle([x - 3, y - 3, x + CELL + 2, y + CELL + 2], outline=colour, width=3)
    img = thumbnail(path, CELL)
    if img is None:
        draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=(235, 235, 235))
        draw.text((x + 20, y + CELL // 2 - 5), "no image", fill=(150, 150, 150), font=font)
    else:
        sheet.paste(img.convert("RGB"), (x + (CELL - img.width) // 2, y + (CELL - img.height) // 2))
    for i, line in enumerate(lines[:2]):
        draw.text((x, y + CELL + 4 + 11 * i), _fit(line, CELL + 4), fill=(30, 30, 30), font=font)


def _colour(case: QueryCase, hit: ReportHit) -> tuple[int, int, int]:
    match = case.matches(hit)
    return GREY if match is None else (GREEN if match else RED)


def contact_sheet(cases: Sequence[QueryCase], k: int | None = None) -> Image:
    """The sheet as a Pillow image: per case, one line per method of at most ``k`` hits."""
    from PIL import Image, ImageDraw

    width_hits = max((len(h[:k] if k else h) for c in cases for h in c.rows.values()), default=0)
    lines = sum(max(1, len(c.rows)) for c in cases)
    step = CELL + TEXT + 2 * PAD
    width = PAD + CELL + 2 * PAD + LABEL_W + width_hits * (CELL + 2 * PAD) + PAD
    height = PAD + max(1, lines) * step + PAD * len(cases)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = PAD + 3
    for case in cases:
        head = [f"leaf: {case.leaf or '?'}", f"class: {case.truth}" if case.truth else Path(case.name).name]
        _cell(sheet, PAD + 3, y, case.image, (60, 90, 200), head)
        for method, hits in (case.rows or {"": []}).items():
            draw.text((PAD + CELL + 2 * PAD, y + CELL // 2 - 5), _fit(method, LABEL_W), fill=(30, 30, 30), font=_font())
            x = PAD + CELL + 2 * PAD + LABEL_W
            for hit in hits[:k] if k else hits:
                d = f"D {hit.distance:.3f}" if hit.distance is not None else ""
                _cell(sheet, x + 3, y, hit.image, _colour(case, hit), [hit.label or "(unlabelled)", d])
                x += CELL + 2 * PAD
            y += step
        y += PAD
        draw.line([0, y - PAD // 2 - 2, width, y - PAD // 2 - 2], fill=(220, 220, 220))
    return sheet


def write_grid(path: Path, cases: Sequence[QueryCase], k: int | None = None) -> None:
    """Save the contact sheet as PNG (atomically: a temporary file, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    contact_sheet(cases, k).save(tmp, format="PNG", optimize=True)
    tmp.replace(path)
