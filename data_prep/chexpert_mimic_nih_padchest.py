"""CheXpert + MIMIC-CXR + NIH ChestX-ray14 + PadChest, on the labels they share (see :mod:`medical_concat`)."""
from .medical_concat import Concat

# The paper's config for this run keeps lateral views (see medical_concat); PadChest's default does too.
CONCAT = Concat("chexpert_mimic_nih_padchest", ("chexpert", "mimic_cxr", "nih", "padchest"),
                member_options={"chexpert": {"frontal_only": False}}).register()
