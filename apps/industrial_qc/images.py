"""Uploaded images on disk, one file per content: `<root>/<sha256[:2]>/<sha256>.<ext>`.

    images = ImageStore("runs/qc_images")
    upload = probe_image(data, filename="part.png", max_pixels=50_000_000)  # checks the header only
    path = images.put(data, sha256=upload.sha256, extension=upload.extension)  # once per content
    path = images.find(upload.sha256)                                     # None if gone

The same bytes uploaded twice are one file. A file is written under a temporary name and renamed
into place, so a reader never sees half an image. This module knows nothing of models, SQL or
HTTP: the inspections table names the file by its hash and extension.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# Pillow's format -> the file extension stored (anything else: the format's name in lower case)
EXTENSIONS = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "BMP": "bmp",
    "TIFF": "tif",
    "GIF": "gif",
    "WEBP": "webp",
}
CONTENT_TYPES = {
    "jpg": "image/jpeg", "png": "image/png", "bmp": "image/bmp", "tif": "image/tiff", "gif": "image/gif",
    "webp": "image/webp",
}  # fmt: skip


class NotAnImage(ValueError):
    """Bytes Pillow cannot read as an image; the message names the file."""


class ImageTooLarge(ValueError):
    """An image of more pixels than the settings allow; the message names the file."""


@dataclass(frozen=True)
class Upload:
    """One uploaded image as received: its bytes, name, content hash and what its header says."""

    data: bytes
    filename: str
    sha256: str
    extension: str  # png, jpg, ...
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES.get(self.extension, "application/octet-stream")


def probe_image(data: bytes, *, filename: str, max_pixels: int) -> Upload:
    """`data` as an Upload, from its header alone (the pixels are decoded later, once): a
    NotAnImage unless Pillow recognises it, an ImageTooLarge past `max_pixels`."""
    if not data:
        raise NotAnImage(f"{filename} is not a readable image: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image_format, (width, height) = image.format or "", image.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageTooLarge(f"{filename}: too many pixels to inspect") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise NotAnImage(f"{filename} is not a readable image: {error}") from None
    if width * height > max_pixels:
        raise ImageTooLarge(f"{filename}: {width}x{height} pixels; at most {max_pixels:,} pixels")
    extension = EXTENSIONS.get(image_format, image_format.lower() or "bin")
    sha256 = hashlib.sha256(data).hexdigest()
    return Upload(
        data=data, filename=filename, sha256=sha256, extension=extension, width=width, height=height
    )


class ImageStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str, *, extension: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{extension}"

    def put(self, data: bytes, *, sha256: str, extension: str) -> Path:
        """Writes `data` unless a file of that hash is already there; returns its path."""
        path = self.path(sha256, extension=extension)
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)  # atomic: two writers of one hash leave the same bytes
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def find(self, sha256: str) -> Path | None:
        """The file of that content, whatever its extension (None if it is gone)."""
        return next((p for p in self.root.glob(f"{sha256[:2]}/{sha256}.*") if p.is_file()), None)
