"""CheXpert + MIMIC-CXR + NIH ChestX-ray14 + PadChest, on the labels they share (see :mod:`medical_concat`)."""
from .medical_concat import Concat

_CONCAT = Concat("chexpert_mimic_nih_padchest", ("chexpert", "mimic_cxr", "nih", "padchest"))
NAME, SOURCES, DESCRIPTION, read = _CONCAT.name, _CONCAT.sources, _CONCAT.description, _CONCAT.read
