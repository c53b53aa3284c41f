"""COVIDx CXR (COVID-Net), binary COVID-19 positive / negative as in the paper.

``train.txt`` and ``test.txt`` (and ``val.txt`` from COVIDx CXR-4 on) hold one image per
space-separated line: ``<patient id> <file name> <class> [<data source>]``. The column
count and classes changed over the releases (COVID-Net's label files):
- v1 (``train_split_v1.txt``): 3 columns, classes normal / bacteria / viral / COVID-19;
- v2-v7A: 4 columns (source: cohen, fig1, actmed, sirm, rsna), normal / pneumonia / COVID-19;
- v7B, CXR-2 (the paper's) and later: 4 columns, positive / negative.
Older classes map to the paper's binary task: COVID-19 -> positive, the rest -> negative.
Some file names contain blanks, so the class is the last class word of the line, not a
fixed column.
Images are in ``train/``, ``test/`` (``val/``). Without a ``val.txt``, a patient-level 10 %
of train becomes the validation split.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample

from .common import carve_val, find_file, read_lines
from .image_folders import image_problem, nonempty
from .raw_files import require_dir

NAME = "covidx"
DESCRIPTION = ("COVIDx CXR folder: train.txt, test.txt [, val.txt] (patient file class [source]) and the "
               "images in train/, test/ [, val/]")
CLASSES = ("negative", "positive")
SPEC = DatasetSpec(NAME, "multiclass", CLASSES)
CLASS_OF = {"negative": "negative", "positive": "positive", "covid-19": "positive",
            "normal": "negative", "pneumonia": "negative", "bacteria": "negative", "viral": "negative"}
LISTS = (("train.txt", "train"), ("val.txt", "val"), ("test.txt", "test"))


def parse_line(line: str, where: str) -> tuple[str, str, str, str | None]:
    """(patient id, file name, binary class, data source or None) of one list line."""
    tokens = line.split()
    at = max((i for i, t in enumerate(tokens) if t.lower() in CLASS_OF), default=-1)
    if at < 2 or len(tokens) - at > 2:
        raise PrepareError(f"{where}: expected '<patient> <file> <class> [<source>]' with class in "
                           f"{sorted(CLASS_OF)}, got {line!r}")
    source = tokens[at + 1] if at + 1 < len(tokens) else None
    return tokens[0], " ".join(tokens[1:at]), CLASS_OF[tokens[at].lower()], source


@register_converter(NAME, DESCRIPTION)
def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    require_dir(raw, DESCRIPTION)
    lists = [(find_file(raw, name), split) for name, split in LISTS if name != "val.txt" or (raw / name).is_file()]
    samples: list[Sample] = []
    for path, split in lists:
        for number, line in read_lines(path):
            log.row()
            patient, filename, label, source = parse_line(line, f"{path} line {number}")
            image = raw / split / filename
            if problem := image_problem(image):
                log.skip(f"{path.name}:{filename}", problem)
                continue
            source = source or NAME
            # Patient ids are only unique within a source (several sources number from 1).
            samples.append(Sample(f"{split}/{filename}", split, image, (CLASSES.index(label),), source,
                                  f"{source}:{patient}"))
    samples = list(nonempty(samples, raw))
    has_val = any(split == "val" for _, split in lists)
    return SPEC, samples if has_val else carve_val(samples)
