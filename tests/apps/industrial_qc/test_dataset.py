"""Reading inspection images: NEU-DET and its split, hand-made Pascal-VOC and class-folder trees, the
detected layout, errors that name the file, and pixels as tensors.

.venv/bin/python -m pytest tests/apps/industrial_qc/test_dataset.py -q
"""

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image

from apps.industrial_qc.dataset import (
    GOOD,
    Box,
    DatasetError,
    InspectionDataset,
    class_names,
    collate,
    detect_layout,
    load_image,
    load_record,
    read_folder,
    read_neu_det,
    read_voc,
    scale_boxes,
    split_records,
)
from core_model.datasets import dataset_dir

NEU_CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


def write_png(path, *, width=40, height=30, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), color=128 if mode == "L" else (10, 200, 30)).save(path)
    return path


def write_xml(path, *, filename, objects, width=40, height=30):
    """A Pascal-VOC annotation; objects are (name, xmin, ymin, xmax, ymax) as VOC counts (from 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, x0, y0, x1, y1 in objects
    )
    size = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    path.write_text(f"<annotation><filename>{filename}</filename>{size}{body}</annotation>")
    return path


@pytest.fixture
def voc(tmp_path):
    """Annotations/ beside JPEGImages/: a scratch image, a mixed one whose largest box is a patch, a
    good part (no objects)."""
    write_png(tmp_path / "JPEGImages" / "a.png")
    write_png(tmp_path / "JPEGImages" / "b.png")
    write_png(tmp_path / "JPEGImages" / "c.png")
    write_xml(tmp_path / "Annotations" / "a.xml", filename="a.png", objects=[("scratch", 1, 1, 10, 30)])
    objects = [("scratch", 1, 1, 5, 5), ("patch", 11, 11, 40, 20)]
    write_xml(tmp_path / "Annotations" / "b.xml", filename="b.png", objects=objects)
    write_xml(tmp_path / "Annotations" / "c.xml", filename="c.png", objects=[])
    return tmp_path


@pytest.fixture
def class_folders(tmp_path):
    for name, count in [("Good", 4), ("dent", 3), ("scratch", 3)]:
        for i in range(count):
            write_png(tmp_path / name / f"{name}_{i}.png", width=20, height=20)
    return tmp_path


@pytest.fixture(scope="module")
def neu():
    return read_neu_det()


# --- NEU-DET ---


def test_neu_splits_boxes_and_classes_match_its_csv_files(neu):
    root = dataset_dir("neu_det")
    with (root / "boxes.csv").open() as file:
        box_rows = sum(1 for _ in csv.DictReader(file))
    assert len(neu) == len(list((root / "ANNOTATIONS").glob("*.xml"))) == 1800
    assert sum(len(r.boxes) for r in neu) == box_rows == 4189
    assert class_names(neu) == NEU_CLASSES
    assert all(
        r.label == r.path.name.rsplit("_", 1)[0] for r in neu
    )  # split.csv's class, not the largest box
    assert [len(read_neu_det(split=s)) for s in ("train", "val", "test")] == [1440, 180, 180]


def test_neu_is_detected_as_voc():
    assert detect_layout(dataset_dir("neu_det")) == "voc"


def test_neu_boxes_are_zero_based_and_inside_the_image(neu):
    record = next(r for r in neu if r.path.name == "crazing_1.jpg")  # VOC 2, 2, 193, 194
    assert record.boxes == (Box("crazing", 1.0, 1.0, 193.0, 194.0),)
    assert (record.width, record.height) == (200, 200)


def test_neu_examples_are_square_tensors_with_scaled_boxes(neu):
    dataset = InspectionDataset(neu[:3], classes=class_names(neu), size=64)
    example = dataset[0]
    assert example.image_3SS.shape == (3, 64, 64) and example.image_3SS.dtype == torch.float32
    assert 0 <= example.image_3SS.min() and example.image_3SS.max() <= 1
    assert example.label == 0 and example.box_labels_N.tolist() == [0] * len(neu[0].boxes)
    assert torch.allclose(example.boxes_N4[0], torch.tensor([1.0, 1.0, 193.0, 194.0]) * 64 / 200)


# --- Pascal-VOC ---


def test_voc_records_have_boxes_from_zero_and_the_largest_boxs_class(voc):
    a, b, c = read_voc(voc)
    assert a.path == voc / "JPEGImages" / "a.png" and (a.width, a.height) == (40, 30)
    assert a.label == "scratch" and a.boxes == (Box("scratch", 0.0, 0.0, 10.0, 30.0),)
    assert b.label == "patch" and len(b.boxes) == 2
    assert c.label == GOOD and c.boxes == ()


def test_voc_xml_may_sit_next_to_its_image(tmp_path):
    write_png(tmp_path / "part.png")
    write_xml(tmp_path / "part.xml", filename="elsewhere.png", objects=[("dent", 3, 3, 9, 9)])
    assert detect_layout(tmp_path) == "voc"
    (record,) = read_folder(tmp_path)  # <filename> is absent: found by the XML's own name
    assert record.path == tmp_path / "part.png" and record.label == "dent"


def test_without_a_size_in_the_xml_the_images_header_gives_it(tmp_path):
    write_png(tmp_path / "part.png", width=50, height=60)
    (tmp_path / "part.xml").write_text(
        "<annotation><object><name>dent</name><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object></annotation>"
    )
    (record,) = read_voc(tmp_path)
    assert (record.width, record.height) == (50, 60) and record.boxes == (Box("dent", 0.0, 0.0, 50.0, 60.0),)


def test_malformed_xml_names_the_file_and_line(voc):
    (voc / "Annotations" / "b.xml").write_text("<annotation>\n<object>\n</annotation>")
    with pytest.raises(DatasetError, match=r"b\.xml, line 3: malformed XML"):
        read_voc(voc)


@pytest.mark.parametrize(
    ("box", "message"),
    [((5, 1, 5, 9), "empty box"), ((1, 9, 9, 2), "empty box"), ((1, 1, 41, 9), "outside the 40x30 image")],
)
def test_a_bad_box_names_the_file_and_the_object(voc, box, message):
    write_xml(
        voc / "Annotations" / "b.xml", filename="b.png", objects=[("patch", 1, 1, 3, 3), ("dent", *box)]
    )
    with pytest.raises(DatasetError, match=rf"b\.xml: object 1 \(dent\): {message}"):
        read_voc(voc)


def test_a_missing_image_names_the_xml_and_the_image(voc):
    (voc / "JPEGImages" / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"a\.xml: its image .*JPEGImages/a\.png is missing"):
        read_voc(voc)


def test_an_image_whose_size_differs_from_its_xml_is_named_when_loaded(voc):
    write_png(voc / "JPEGImages" / "a.png", width=50)
    with pytest.raises(DatasetError, match=r"a\.png: is 50x30 pixels, its annotation says 40x30"):
        load_record(read_voc(voc)[0], size=16)


# --- class folders, layouts, splits ---


def test_class_folders_name_the_class_and_good_comes_first(class_folders):
    assert detect_layout(class_folders) == "class_folders"
    records = read_folder(class_folders)
    assert class_names(records) == [GOOD, "dent", "scratch"]
    assert sum(r.label == GOOD for r in records) == 4 and all(r.boxes == () for r in records)
    assert {(r.width, r.height) for r in records} == {(20, 20)}


def test_another_folder_can_mean_good(tmp_path):
    write_png(tmp_path / "MT_Free" / "0.png")
    write_png(tmp_path / "MT_Crack" / "0.png")
    assert class_names(read_folder(tmp_path, good="MT_Free")) == [GOOD, "MT_Crack"]


def test_an_empty_folder_says_what_layouts_are_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DatasetError, match="no class folders of images; accepted layouts: a Pascal-VOC folder"
    ):
        detect_layout(tmp_path)


def test_a_corrupt_image_in_class_folders_is_named(class_folders):
    (class_folders / "dent" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"dent/broken\.png: not an image"):
        read_folder(class_folders)


def test_split_records_is_stratified_seeded_and_order_free(class_folders):
    records = read_folder(class_folders)
    parts = split_records(records, fractions=(0.5, 0.25, 0.25), seed=1)
    assert sorted(r.path for part in parts.values() for r in part) == [r.path for r in records]
    assert sorted(r.label for r in parts["val"]) == ["dent", GOOD, "scratch"]  # one of each class
    assert split_records(records[::-1], fractions=(0.5, 0.25, 0.25), seed=1) == parts
    assert read_folder(class_folders, split="test", seed=0) == split_records(records, seed=0)["test"]


def test_a_split_file_picks_the_split_and_its_bad_line_is_named(class_folders):
    rows = [f"{r.path.name},{'test' if r.label == 'dent' else 'train'}" for r in read_folder(class_folders)]
    (class_folders / "split.csv").write_text("\n".join(["image,split", *rows]) + "\n")
    assert {r.label for r in read_folder(class_folders, split="test")} == {"dent"}
    (class_folders / "split.csv").write_text("\n".join(["image,split", rows[0], "dent_0.png,dev"]) + "\n")
    with pytest.raises(DatasetError, match=r"split\.csv, line 3: split 'dev' is not one of"):
        read_folder(class_folders)


# --- pixels ---


def test_load_image_reads_bytes_and_replicates_grey(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (30, 20), color=51).save(buffer, format="PNG")
    image_3HW = load_image(buffer.getvalue())
    assert image_3HW.shape == (3, 20, 30) and torch.allclose(image_3HW, torch.full_like(image_3HW, 0.2))
    assert load_image(buffer.getvalue(), size=16).shape == (3, 16, 16)


def test_load_image_refuses_what_is_not_an_image(tmp_path):
    with pytest.raises(DatasetError, match="<bytes>: not an image: cannot identify image file"):
        load_image(b"%PDF-1.4 not a picture")
    truncated = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color=(1, 2, 3)).save(buffer, format="JPEG")
    truncated.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(DatasetError, match=r"cut\.jpg: not an image"):
        load_image(truncated)
    with pytest.raises(DatasetError, match="no such file"):
        load_image(tmp_path / "absent.png")


def test_scale_boxes_follows_a_stretch_to_the_square():
    (box,) = scale_boxes([Box("dent", 10, 5, 20, 15)], width=40, height=20, size=80)
    assert box == Box("dent", 20.0, 20.0, 40.0, 60.0)


def test_collate_keeps_each_images_own_box_count(voc):
    records = read_voc(voc)
    dataset = InspectionDataset(records, classes=class_names(records), size=32, cache=True)
    batch = collate([dataset[i] for i in range(3)])
    assert batch.images_B3SS.shape == (3, 3, 32, 32)
    assert batch.labels_B.tolist() == [dataset.classes.index(n) for n in ("scratch", "patch", GOOD)]
    assert [b.shape for b in batch.boxes] == [(1, 4), (2, 4), (0, 4)]
    assert torch.equal(collate([dataset[i] for i in range(3)]).images_B3SS, batch.images_B3SS)  # from cache


def test_a_class_outside_the_list_is_named(voc):
    with pytest.raises(DatasetError, match=r"a\.png: class 'scratch' is not one of"):
        InspectionDataset(read_voc(voc), classes=[GOOD, "patch"], size=32)


def test_a_16_bit_image_keeps_its_grey_levels():
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(buffer, format="PNG")
    image_3HW = load_image(buffer.getvalue(), size=4)
    assert image_3HW.shape == (3, 4, 4) and torch.allclose(
        image_3HW, torch.full_like(image_3HW, 0.5), atol=1e-4
    )
