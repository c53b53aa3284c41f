"""COVIDx CXR (COVID-Net), binary COVID-19 positive / negative as in the paper.

``train.txt`` and ``test.txt`` (and ``val.txt`` from COVIDx CXR-4 on) hold one image per
space-separated line: ``<patient id> <file name> <class> [<data source>]``. The column
count and classes changed over the releases (COVID-Net's label files):
- v1 (``train_split_v1.txt``): 3 columns, classes normal / bacteria / viral / COVID-19;
- v2-v7A: 4 columns (source: cohen, fig1, actmed, sirm, rsna), normal / pneumonia / COVID-19;
- v7B, CXR-2 (the paper's) and later: 4 columns, positive / negative.
Older classes map to the paper's binary task: COVID-19 -> positive, the rest -> negative.
The class is the last class word of the line, not a fixed column: patient ids and file names
may contain blanks (``COVID 101 COVID(101).png positive sirm``: patient ``COVID 101``, all
2,142 such lines of v7/v8). Where the words before the class split more than one way, the
split whose file exists wins (else the one-word file name).
A file listed twice in a list (COVIDx v1, v4) is a counted skip, "listed again". The
official test list is kept whole; a patient who is also in it loses his training (and
validation) images, a counted skip, so no patient is in two splits. Images are in
``train/``, ``test/`` (``val/``). The splits are the lists as they are, as the paper's code
(``transfer_learning/datasets/covidx_cxr2.py`` reads ``train.txt`` to train on and ``test.txt``
to test on); nothing is carved out of train, and without a ``val.txt`` there is no val split.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample

from .common import find_file, read_lines, relative_parts
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


def parse_line(line: str, where: str, folder: Path | None = None) -> tuple[str, str, str, str | None]:
    """(patient id, file name, binary class, data source or None) of one list line.

    The words before the class are the patient id and the file name, either may hold
    blanks: the first split whose file exists in ``folder`` wins, else the last word alone
    is the file name.
    """
    tokens = line.split()
    at = max((i for i, t in enumerate(tokens) if t.lower() in CLASS_OF), default=-1)
    if at < 2 or len(tokens) - at > 2:
        raise PrepareError(f"{where}: expected '<patient> <file> <class> [<source>]' with class in "
                           f"{sorted(CLASS_OF)}, got {line!r}")
    source = tokens[at + 1] if at + 1 < len(tokens) else None
    splits = [(" ".join(tokens[:k]), " ".join(tokens[k:at])) for k in range(1, at)]
    patient, filename = next((pair for pair in splits if folder is not None and (folder / pair[1]).is_file()),
                             splits[-1])
    return patient, filename, CLASS_OF[tokens[at].lower()], source


@register_converter(NAME, DESCRIPTION, markers=("train.txt",))
def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    require_dir(raw, DESCRIPTION)
    lists = [(find_file(raw, name), split) for name, split in LISTS if name != "val.txt" or (raw / name).is_file()]
    samples: list[Sample] = []
    listed: set[str] = set()
    for path, split in lists:
        for number, line in read_lines(path):
            log.row()
            where = f"{path} line {number}"
            patient, filename, label, source = parse_line(line, where, raw / split)
            try:
                image = (raw / split).joinpath(*relative_parts(filename, "file name"))
            except PrepareError as err:
                raise PrepareError(f"{where}: {err}") from None
            key = f"{split}/{filename}"
            if key in listed:
                log.skip(f"{path.name}:{filename}", "listed again")
                continue
            listed.add(key)
            if problem := image_problem(image):
                log.skip(f"{path.name}:{filename}", problem)
                continue
            source = source or NAME
            # Patient ids are only unique within a source (several sources number from 1).
            samples.append(Sample(key, split, image, (CLASSES.index(label),), source, f"{source}:{patient}"))
    tested = {s.patient for s in samples if s.split == "test"}
    kept = []
    for s in samples:
        if s.split != "test" and s.patient in tested:
            log.skip(s.key, "patient also in the test list")
        else:
            kept.append(s)
    return SPEC, list(nonempty(kept, raw))
