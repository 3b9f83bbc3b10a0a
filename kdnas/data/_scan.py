"""``kdnas validate``'s look at an image folder: every file opened as a search will read it, every problem listed.

A search reads an image folder file by file and stops at the first file it cannot use (after the teacher may
have trained for an hour); this scan finds them all at once. It reads each file's header and checks its
structure with PIL's ``verify()``, without decoding pixels, so 5,000 PNGs take seconds.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

Report = Callable[[str, str], None]
_SHOWN = 10  # size mismatches named in the message; the rest are counted


def scan_image_folder(root: Path, resize: Optional[int], report: Report) -> list[str]:
    """Report (under ``data.root``) every unreadable image, class folders without images, fewer than two
    classes, and sizes that differ without ``data.resize``. Returns warnings (lines) for what still works."""
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension

    try:
        classes, _ = find_classes(str(root))
    except (FileNotFoundError, OSError) as err:
        report("data.root", f"{root} is not an image folder (one sub-folder of images per class): {err}")
        return []
    sizes: dict[str, tuple[int, int]] = {}
    modes: Counter = Counter()
    for name in classes:
        found = 0
        # The files torchvision's ImageFolder lists, in its order (symbolic links followed, like it does).
        for folder, _, files in sorted(os.walk(root / name, followlinks=True)):
            for file in sorted(files):
                if not has_file_allowed_extension(file, IMG_EXTENSIONS):
                    continue
                path = os.path.join(folder, file)
                found += 1
                try:
                    with Image.open(path) as im:
                        size, mode = im.size, im.mode
                        im.verify()
                except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
                    cause = str(err).replace(f" {path!r}", "") or type(err).__name__  # PIL repeats the path
                    report("data.root", f"cannot read image {path}: {cause}")
                    continue
                sizes[path] = size
                modes[mode] += 1
        if not found:
            report("data.root", f"class folder {root / name} holds no images ({', '.join(IMG_EXTENSIONS)})")
    if len(classes) < 2:
        report("data.root", f"{root} holds {len(classes)} class folder{'' if len(classes) == 1 else 's'}; a "
               f"classifier needs at least two (one sub-folder of images per class)")
    if resize is None and sizes:
        first, (w, h) = next(iter(sizes.items()))
        other = [f"{p} ({sw}x{sh})" for p, (sw, sh) in sizes.items() if (sw, sh) != (w, h)]
        if other:
            more = f" and {len(other) - _SHOWN} more" if len(other) > _SHOWN else ""
            report("data.resize", f"{len(other)} images are not {w}x{h} like {first}: {', '.join(other[:_SHOWN])}"
                   f"{more}; set data.resize to bring every image to one size")
    if len(modes) > 1:
        counts = ", ".join(f"{m} ({n})" for m, n in sorted(modes.items()))
        return [f"{root}: images of several colour modes, {counts}: each is converted to RGB when read"]
    return []
