"""Drawing a badge: pure (bytes in memory, no I/O), so it is easy to test and to reuse.

Pillow does the drawing and the PNG encoding. Text uses DejaVu Sans where the system has it
(accented names need its glyphs) and Pillow's bundled font otherwise, so nothing must be installed
beyond Pillow itself.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import cache
from typing import Any

WIDTH, HEIGHT = 640, 360
MAX_NAME = 80


class BadgeError(ValueError):
    """A badge that cannot be drawn: a missing library, or an unusable id or name."""


@dataclass(frozen=True)
class Badge:
    badge_id: str
    name: str
    png: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.png).hexdigest()


def _accent(badge_id: str) -> tuple[int, int, int]:
    """A colour per badge id, so a stack of printed badges is easy to sort by eye."""
    digest = hashlib.sha256(badge_id.encode()).digest()
    return (64 + digest[0] % 128, 64 + digest[1] % 128, 64 + digest[2] % 128)


@cache
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def render_badge(badge_id: str, name: str, event: str = "ElixirConf x PyCon") -> Badge:
    """A 640x360 PNG: event banner in the badge's colour, the name large, the id small."""
    if not isinstance(badge_id, str) or not badge_id.strip():
        raise BadgeError(f"badge id must be a non-empty string, got {badge_id!r}")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise BadgeError(f"name must be 1..{MAX_NAME} characters, got {name!r}")
    try:
        from PIL import Image, ImageDraw
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BadgeError("Pillow is not installed: pip install 'oban-bridge[examples]'") from exc

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    accent = _accent(badge_id)
    draw.rectangle((0, 0, WIDTH, 90), fill=accent)
    draw.rectangle((4, 4, WIDTH - 5, HEIGHT - 5), outline=accent, width=4)
    draw.text((32, 24), event, fill="white", font=_font(34))
    size = 56
    while draw.textlength(name, font=_font(size)) > WIDTH - 64 and size > 18:
        size -= 4
    draw.text((32, 150), name, fill="black", font=_font(size))
    draw.text((32, 300), f"badge {badge_id}", fill=accent, font=_font(24))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return Badge(badge_id=badge_id, name=name, png=out.getvalue())
