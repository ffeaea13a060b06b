"""Render the docs' expression pictures (docs/expression/*.png): each photo's head as Reconstruct Face makes it
(through the extension's own code path, tools/render_heads.py), neutral (every ARKit key at 0: Basis and the
step keys are the neutral face) beside "as in the photo" (the ARKit keys at the weights the model read from
the photo), from the front and at 45 degrees; the weights that are on are listed under the sheet.

    .venv/bin/python tools/render_expression.py [--out docs/expression] [--size 360]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from render_heads import heads, render, sheet, sheet_options  # noqa: E402

def caption(path: Path, weights: dict[str, float], threshold: float = 0.15) -> None:
    """The weights above ``threshold`` written under the sheet."""
    from PIL import Image, ImageDraw

    img = Image.open(path).convert("RGB")
    on = sorted(((w, n) for n, w in weights.items() if w >= threshold), reverse=True)
    text = "read from the photo: " + (", ".join(f"{n} {w:.2f}" for w, n in on) or "nothing above 0.15")
    out = Image.new("RGB", (img.width, img.height + 22), (30, 30, 34))
    out.paste(img, (0, 0))
    ImageDraw.Draw(out).text((8, img.height + 4), text, fill=(220, 220, 220))
    out.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    a = sheet_options(__doc__, "expression", argv)
    for name, photos, obj, s, tmp in heads(a.size, a.synthetic):
        rows = json.loads(obj.get("glvd_expression_weights") or "[]")
        if not rows:
            raise SystemExit("the checkpoint has no expression head: nothing to show")
        weights = dict(zip(obj["glvd_expression_names"], rows[0], strict=True))
        shots = []
        for label, yaw, keys in (("neutral", 0.0, {}), ("as in the photo", 0.0, weights),
                                 ("neutral, 45 deg", 45.0, {}), ("as in the photo, 45 deg", 45.0, weights)):
            path = tmp / f"{name}_{len(shots)}.png"
            render(s, obj, yaw, keys, path)
            shots.append((label, path))
        out = Path(a.out) / f"{name}.png"
        sheet(photos, shots, a.size, out)
        caption(out, weights)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
