"""CheXpert + MIMIC-CXR, on the labels they share (see :mod:`medical_concat`)."""
from .medical_concat import Concat

_CONCAT = Concat("chexpert_mimic", ("chexpert", "mimic_cxr"))
NAME, SOURCES, DESCRIPTION, read = _CONCAT.name, _CONCAT.sources, _CONCAT.description, _CONCAT.read
