"""CheXpert + MIMIC-CXR + NIH ChestX-ray14, on the labels they share (see :mod:`medical_concat`)."""
from .medical_concat import Concat

CONCAT = Concat("chexpert_mimic_nih", ("chexpert", "mimic_cxr", "nih")).register()
