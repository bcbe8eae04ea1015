"""Helpers shared by the lessons of the COVID-19 chest X-ray course.

One module per concern, so a reader can guess the file from the question:

- ``paths``     where data, caches and runs live (``CXR_DATA_DIR``, ``CXR_RUNS_DIR``)
- ``images``    decoding any image file we meet into a clean 8-bit array
- ``sources``   the four public sources and how to fetch them (or copy them from a mirror)
- ``curation``  which images are kept, duplicates, and the patient-level split
- ``plots``     figures used by more than one lesson
- ``cli``       the ``cxr-data`` command
"""

__version__ = "0.1.0"

CLASSES: tuple[str, ...] = ("COVID-19", "Normal", "Pneumonia")
"""The three classes, in the order of the paper's script (COVID-19 -> 0, Normal -> 1, Pneumonia -> 2)."""
