"""Inspection images as typed records, read from a Pascal-VOC folder, class folders or NEU-DET, and
turned into tensors: the data layer of industrial QC.

    records = read_neu_det(split="train")              # NEU-DET, its split.csv
    records = read_folder("/data/line3")              # any accepted layout, detected
    classes = class_names(records)                    # "good" first when present
    dataset = InspectionDataset(records, classes=classes, size=192, augment=augment)
    loader = DataLoader(dataset, batch_size=32, shuffle=True, collate_fn=collate)
    image_3HW = load_image(upload_bytes, size=192)     # an inspection request's image

Accepted layouts (`detect_layout`):
- "voc": XML files in a folder named Annotations (any case) with the images in a sibling folder named
  Images or JPEGImages, or XML files next to their images. An image's class is the class of its
  largest box, unless split.csv says otherwise (below); an XML with no objects is a good part.
- "class_folders": root/<class>/*.jpg|png|bmp|tif; the folder named "good" (any case, or the name
  passed as `good=`) holds defect-free parts. Their records have no boxes.
A `split.csv` at the root (columns image = file name, split = train/val/test, and optionally class)
picks the split and, when it has a class column, each image's class. NEU-DET needs that column: 123 of
its 1,800 images hold boxes of two classes (small inclusions inside patches or scratches, say), and
for 10 of them the largest box is not the image's class. Without a split.csv, `split_records` makes a
stratified, seeded split.

Boxes are in continuous pixel coordinates of the stored image: (label, x0, y0, x1, y1) with
0 <= x0 < x1 <= width, so a box covers the pixels x0..x1-1. VOC files count pixels from 1 and include
xmax, so xmin - 1 becomes x0 and xmax stays x1 (as detectron2 reads VOC); a file that counts from 0 is
accepted too. The VOC "difficult" flag is ignored: every box is kept.

Class indices: `class_names` puts "good" at index 0 when present, then the defect classes sorted by
name, so a model's index 0 means "no defect" whenever the data has good parts.

This module reads and checks data; it knows nothing of models, training or the API. Every problem
with the data is a DatasetError whose message names the file (and the line or object).
"""

from __future__ import annotations

import csv
import io
import random
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from core_model.datasets import dataset_dir

# legend: B batch, N boxes, C channels (3), H height, W width, S the square side after resizing

GOOD = "good"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
ANNOTATION_DIRS = ("annotations",)
IMAGE_DIRS = ("images", "jpegimages")
SPLIT_FILE = "split.csv"
SPLITS = ("train", "val", "test")
LAYOUTS_ACCEPTED = (
    "a Pascal-VOC folder (Annotations/*.xml beside Images/ or JPEGImages/, or *.xml next to the images) "
    "or class folders (root/<class>/*.jpg|png|bmp|tif, 'good' for defect-free parts)"
)

Layout = Literal["voc", "class_folders"]
Split = Literal["train", "val", "test"]


class DatasetError(ValueError):
    """Data that cannot be read as it is; the message names the file (and the line or object)."""


class Box(NamedTuple):
    """One defect: its class and its corners in pixels (x0, y0 top left; x1, y1 exclusive)."""

    label: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.y1 - self.y0)


@dataclass(frozen=True)
class ImageRecord:
    """One part's image: where it is, its class ("good" for a defect-free part), its boxes (empty
    for a good part and for class-folder data) and its size in pixels."""

    path: Path
    label: str
    boxes: tuple[Box, ...]
    width: int
    height: int


# --- reading --------------------------------------------------------------------------------------


def read_neu_det(*, split: Split | None = None, root: str | Path | None = None) -> list[ImageRecord]:
    """NEU-DET's records (all 1,800, or one split of its split.csv: 1440 / 180 / 180)."""
    return read_folder(root if root is not None else dataset_dir("neu_det"), split=split)


def read_folder(
    root: str | Path, *, split: Split | None = None, seed: int = 0, good: str = GOOD
) -> list[ImageRecord]:
    """The records of a folder in any accepted layout, sorted by path, with the classes of its
    split.csv when it has one. `split` picks one part: the one split.csv names, or else
    `split_records(..., seed=seed)`'s."""
    root = Path(root)
    layout = detect_layout(root)
    records = read_voc(root) if layout == "voc" else read_class_folders(root, good=good)
    if not (root / SPLIT_FILE).is_file():
        return records if split is None else split_records(records, seed=seed)[split]
    rows = read_split_file(root / SPLIT_FILE, records=records)
    records = [replace(r, label=rows[r.path.name].label or r.label) for r in records]
    return [r for r in records if split is None or rows[r.path.name].split == split]


def detect_layout(root: str | Path) -> Layout:
    """The layout: "voc" when the folder (or its Annotations folder) holds XML files,
    "class_folders" when its subfolders hold images; a DatasetError saying what is accepted otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    if any(_annotations_dir(root).glob("*.xml")):
        return "voc"
    if any(_images_in(folder) for folder in _subfolders(root)):
        return "class_folders"
    raise DatasetError(
        f"{root}: no XML annotations and no class folders of images; accepted layouts: {LAYOUTS_ACCEPTED}"
    )


def read_voc(root: str | Path) -> list[ImageRecord]:
    """The records of a Pascal-VOC folder: one per XML file, sorted by path."""
    root = Path(root)
    annotations = _annotations_dir(root)
    images = next((d for d in _subfolders(root) if d.name.lower() in IMAGE_DIRS), annotations)
    xml_paths = sorted(annotations.glob("*.xml"))
    if not xml_paths:
        raise DatasetError(f"{root}: no XML annotations; accepted layouts: {LAYOUTS_ACCEPTED}")
    return sorted((read_voc_xml(path, images=images) for path in xml_paths), key=lambda r: r.path)


def read_voc_xml(path: str | Path, *, images: str | Path) -> ImageRecord:
    """One Pascal-VOC XML file's record; its image is looked for in `images` by the XML's
    <filename>, else by the XML's own name with an image suffix."""
    path, images = Path(path), Path(images)
    try:
        tree = ET.parse(path)
    except ET.ParseError as error:
        raise DatasetError(f"{path}, line {error.position[0]}: malformed XML ({error})") from None
    annotation = tree.getroot()
    image_path = _image_for(path, annotation, images)
    width, height = _size_of(path, annotation, image_path)
    boxes = tuple(_box_of(path, i, obj, width, height) for i, obj in enumerate(annotation.iter("object")))
    label = max(boxes, key=lambda box: box.area).label if boxes else GOOD  # max keeps the first of ties
    return ImageRecord(path=image_path, label=label, boxes=boxes, width=width, height=height)


def read_class_folders(root: str | Path, *, good: str = GOOD) -> list[ImageRecord]:
    """The records of root/<class>/<image>: the folder's name is the class, except that the folder
    named `good` (any case) becomes the class "good". Records have no boxes."""
    root = Path(root)
    records = []
    for folder in _subfolders(root):
        label = GOOD if folder.name.lower() == good.lower() else folder.name
        for path in _images_in(folder):
            width, height = _header_size(path)
            records.append(ImageRecord(path=path, label=label, boxes=(), width=width, height=height))
    if not records:
        raise DatasetError(f"{root}: no images found; accepted layouts: {LAYOUTS_ACCEPTED}")
    return sorted(records, key=lambda r: r.path)


class SplitRow(NamedTuple):
    split: str
    label: str | None  # the image's class, when the file has a class column


def read_split_file(path: str | Path, *, records: list[ImageRecord]) -> dict[str, SplitRow]:
    """{image file name: SplitRow} from a CSV with columns image, split and optionally class,
    checked to name each of `records` exactly once with a split in train/val/test."""
    path = Path(path)
    names = {r.path.name for r in records}
    if len(names) < len(records):
        twice = next(name for name in names if sum(r.path.name == name for r in records) > 1)
        raise DatasetError(f"{path}: names images by file name, but two images are named {twice}")
    splits: dict[str, SplitRow] = {}
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        if not {"image", "split"} <= set(reader.fieldnames or ()):
            raise DatasetError(f"{path}: needs columns image and split, has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS:
                raise DatasetError(f"{path}, line {line}: split {row['split']!r} is not one of {SPLITS}")
            if row["image"] not in names:
                raise DatasetError(f"{path}, line {line}: image {row['image']!r} is not in the dataset")
            splits[row["image"]] = SplitRow(row["split"], row.get("class") or None)
    missing = sorted(names - splits.keys())
    if missing:
        raise DatasetError(f"{path}: no row for {missing[0]} ({len(missing)} images like it)")
    return splits


def split_records(
    records: list[ImageRecord], *, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[ImageRecord]]:
    """A train/val/test split stratified by class: each class's images, sorted by path and shuffled
    with `seed`, give round(n * fraction) to val and to test and the rest to train. The same records
    in any order give the same split."""
    parts: dict[str, list[ImageRecord]] = {name: [] for name in SPLITS}
    by_label: dict[str, list[ImageRecord]] = {}
    for record in sorted(records, key=lambda r: r.path):
        by_label.setdefault(record.label, []).append(record)
    for label in sorted(by_label):
        group = by_label[label]
        random.Random(f"{seed}:{label}").shuffle(group)
        n_val, n_test = round(len(group) * fractions[1]), round(len(group) * fractions[2])
        parts["val"] += group[:n_val]
        parts["test"] += group[n_val : n_val + n_test]
        parts["train"] += group[n_val + n_test :]
    return {name: sorted(part, key=lambda r: r.path) for name, part in parts.items()}


def class_names(records: list[ImageRecord]) -> list[str]:
    """Every image and box class, "good" first when present (index 0), then the others by name."""
    names = {r.label for r in records} | {box.label for r in records for box in r.boxes}
    return ([GOOD] if GOOD in names else []) + sorted(names - {GOOD})


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _annotations_dir(root: Path) -> Path:
    return next((d for d in _subfolders(root) if d.name.lower() in ANNOTATION_DIRS), root)


def _image_for(xml_path: Path, annotation: ET.Element, images: Path) -> Path:
    filename = (annotation.findtext("filename") or "").strip()
    candidates = [images / filename] if filename else []
    candidates += [images / (xml_path.stem + suffix) for suffix in IMAGE_SUFFIXES]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise DatasetError(f"{xml_path}: its image {candidates[0]} is missing")
    return found


def _size_of(xml_path: Path, annotation: ET.Element, image_path: Path) -> tuple[int, int]:
    """<size> when the XML gives a positive one (loading checks it against the pixels), else the
    image file's header."""
    try:
        width, height = (int(float(annotation.findtext(f"size/{key}") or 0)) for key in ("width", "height"))
    except ValueError:
        raise DatasetError(f"{xml_path}: <size> is not a number") from None
    return (width, height) if width > 0 and height > 0 else _header_size(image_path)


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, Image.DecompressionBombError) as error:  # UnidentifiedImageError is an OSError
        raise DatasetError(f"{path}: not an image: {error}") from None


def _box_of(xml_path: Path, index: int, obj: ET.Element, width: int, height: int) -> Box:
    label = (obj.findtext("name") or "").strip()
    where = f"{xml_path}: object {index} ({label or 'no name'})"
    if not label:
        raise DatasetError(f"{where}: has no <name>")
    try:
        xmin, ymin, xmax, ymax = (
            float(obj.findtext(f"bndbox/{key}") or "") for key in ("xmin", "ymin", "xmax", "ymax")
        )
    except ValueError:
        raise DatasetError(f"{where}: <bndbox> lacks a numeric xmin, ymin, xmax or ymax") from None
    if xmin >= xmax or ymin >= ymax:
        raise DatasetError(f"{where}: empty box, xmin {xmin:g} ymin {ymin:g} xmax {xmax:g} ymax {ymax:g}")
    if xmin < 0 or ymin < 0 or xmax > width or ymax > height:
        raise DatasetError(
            f"{where}: outside the {width}x{height} image, "
            f"xmin {xmin:g} ymin {ymin:g} xmax {xmax:g} ymax {ymax:g}"
        )
    # VOC counts pixels from 1 and includes xmax; a file counting from 0 gives xmin 0, kept at 0
    return Box(label, max(xmin - 1, 0.0), max(ymin - 1, 0.0), xmax, ymax)


# --- pixels ---------------------------------------------------------------------------------------


def load_image(source: str | Path | bytes, *, size: int | None = None) -> torch.Tensor:
    """An image file or its bytes as float32 [3, H, W] in [0, 1], grey replicated to 3 channels,
    resized to [3, size, size] when `size` is given (stretched: the aspect ratio is not kept). A
    DatasetError "not an image: <Pillow's reason>" for anything Pillow cannot decode."""
    return _to_tensor(_decode(source), size=size)


def scale_boxes(boxes: tuple[Box, ...] | list[Box], *, width: int, height: int, size: int) -> list[Box]:
    """Boxes of a width x height image moved onto the size x size image that `load_image` makes."""
    sx, sy = size / width, size / height
    return [Box(b.label, b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy) for b in boxes]


def load_record(record: ImageRecord, *, size: int) -> tuple[torch.Tensor, list[Box]]:
    """A record's image [3, S, S] and its boxes scaled to match; a DatasetError when the pixels'
    size is not the one the record (its XML) states, since its boxes would then be wrong."""
    rgb = _decode(record.path)
    if rgb.size != (record.width, record.height):
        raise DatasetError(
            f"{record.path}: is {rgb.width}x{rgb.height} pixels, "
            f"its annotation says {record.width}x{record.height}"
        )
    boxes = scale_boxes(record.boxes, width=record.width, height=record.height, size=size)
    return _to_tensor(rgb, size=size), boxes


def _decode(source: str | Path | bytes) -> Image.Image:
    """A Pillow image in mode RGB, or F (one channel, floats in [0, 1]) for 16-bit and float images,
    which RGB would clip to white."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise DatasetError(f"{name}: no such file")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()  # decode now, so that a truncated file fails here
            if image.mode.startswith("I"):  # I;16 and I from 16-bit cameras: 0..65535
                return Image.fromarray(np.asarray(image, dtype=np.float32).clip(0, 65535) / 65535)
            if image.mode == "F":
                return Image.fromarray(np.asarray(image, dtype=np.float32).clip(0, 1))
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DatasetError(f"{name}: not an image: {error}") from None


def _to_tensor(rgb: Image.Image, *, size: int | None) -> torch.Tensor:
    # one resize for training and serving alike (Pillow's bilinear filter, antialiased when shrinking)
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    if rgb.mode == "F":
        grey_HW = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).clamp_(0, 1)
        return grey_HW.expand(3, -1, -1).contiguous()
    pixels_HWC = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy())
    return pixels_HWC.permute(2, 0, 1).float().div_(255.0)


# --- torch ----------------------------------------------------------------------------------------

# (image_3HW, boxes_N4, box_labels_N, generator) -> the same, changed; augment.Augment is one
AugmentFn = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class Example(NamedTuple):
    image_3SS: torch.Tensor  # float32 in [0, 1]
    label: int  # index into the dataset's classes
    boxes_N4: torch.Tensor  # float32 x0, y0, x1, y1 in pixels of the S x S image
    box_labels_N: torch.Tensor  # int64 indices into the dataset's classes


class Batch(NamedTuple):
    images_B3SS: torch.Tensor
    labels_B: torch.Tensor
    boxes: list[torch.Tensor]  # B tensors [N, 4], N varying per image
    box_labels: list[torch.Tensor]  # B tensors [N]


class InspectionDataset(Dataset[Example]):
    """Records as Examples of a fixed square size, augmented when `augment` is given. The augment's
    randomness comes from a generator seeded by (seed, epoch, index), so an epoch is the same with
    any number of DataLoader workers; call `set_epoch` for fresh draws each epoch. `cache=True` keeps
    each resized image as uint8 (3 * S * S bytes), once per worker process."""

    def __init__(
        self,
        records: list[ImageRecord],
        *,
        classes: list[str],
        size: int,
        augment: AugmentFn | None = None,
        seed: int = 0,
        cache: bool = False,
    ):
        self.records, self.classes, self.size = records, list(classes), size
        self.augment, self.seed, self.epoch, self.cache = augment, seed, 0, cache
        self._index = {name: i for i, name in enumerate(self.classes)}
        self._cached: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for record in records:
            for name in (record.label, *(box.label for box in record.boxes)):
                if name not in self._index:
                    raise DatasetError(f"{record.path}: class {name!r} is not one of {self.classes}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Example:
        record = self.records[index]
        image_3SS, boxes_N4, box_labels_N = self._load(index)
        if self.augment is not None:
            generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.epoch) * 1_000_003 + index
            )
            image_3SS, boxes_N4, box_labels_N = self.augment(
                image_3SS, boxes_N4, box_labels_N, generator=generator
            )
        return Example(image_3SS, self._index[record.label], boxes_N4, box_labels_N)

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if index in self._cached:
            pixels_3SS, boxes_N4, box_labels_N = self._cached[index]
            return pixels_3SS.float().div_(255.0), boxes_N4.clone(), box_labels_N.clone()
        image_3SS, boxes = load_record(self.records[index], size=self.size)
        boxes_N4 = torch.tensor([box[1:] for box in boxes], dtype=torch.float32).reshape(-1, 4)
        box_labels_N = torch.tensor([self._index[box.label] for box in boxes], dtype=torch.int64)
        if self.cache:
            pixels_3SS = image_3SS.mul(255.0).round_().to(torch.uint8)
            self._cached[index] = (pixels_3SS, boxes_N4, box_labels_N)
            return pixels_3SS.float().div_(255.0), boxes_N4.clone(), box_labels_N.clone()
        return image_3SS, boxes_N4, box_labels_N


def collate(examples: list[Example]) -> Batch:
    """Examples stacked into a Batch; boxes stay lists since each image has its own count."""
    return Batch(
        images_B3SS=torch.stack([e.image_3SS for e in examples]),
        labels_B=torch.tensor([e.label for e in examples], dtype=torch.int64),
        boxes=[e.boxes_N4 for e in examples],
        box_labels=[e.box_labels_N for e in examples],
    )
