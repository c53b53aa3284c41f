"""CheXpert + MIMIC-CXR, on the labels they share (see :mod:`medical_concat`)."""
from .medical_concat import Concat

CONCAT = Concat("chexpert_mimic", ("chexpert", "mimic_cxr")).register()
