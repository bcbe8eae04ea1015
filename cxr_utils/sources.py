"""The four public sources of the paper's data: what each is, where it lives upstream and on disk.

Each source keeps its upstream folder layout and file names under ``<CXR_DATA_DIR>/raw/<folder>``,
so what is on disk can always be compared with the original repository.

=============  =====================================  ==============================================
key            folder                                 upstream
=============  =====================================  ==============================================
``cohen``      ``covid-chestxray-dataset``            github.com/ieee8023/covid-chestxray-dataset
``figure1``    ``Figure1-COVID-chestxray-dataset``    github.com/agchung/Figure1-COVID-chestxray-dataset
``actualmed``  ``Actualmed-COVID-chestxray-dataset``  github.com/agchung/Actualmed-COVID-chestxray-dataset
``kaggle``     ``chest_xray``                         kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia
=============  =====================================  ==============================================

The GitHub sources are pinned to the commits closest to the paper (May/June 2020). How they are
downloaded (or copied from a mirror) and verified is :mod:`cxr_utils.fetch`; how their metadata
files are read is :mod:`cxr_utils.metadata`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cxr_utils import paths


@dataclass(frozen=True)
class Source:
    """One public source: where it lives upstream and what a complete copy holds."""

    key: str
    folder: str
    title: str
    url: str
    licence: str
    citation: str
    github_repo: str | None = None
    github_commit: str | None = None
    kaggle_handle: str | None = None
    metadata_file: str | None = None
    metadata_encoding: str = "utf-8"
    """The text encoding the metadata file actually uses (``metadata.read_metadata_csv`` detects it)."""
    expected_images: dict[str, int] = field(default_factory=dict)
    """Image files a complete upstream copy holds, by sub-folder (used to verify a fetch)."""


SOURCES: dict[str, Source] = {
    s.key: s
    for s in (
        Source(
            key="cohen",
            folder="covid-chestxray-dataset",
            title="COVID-19 image data collection (Cohen et al.)",
            url="https://github.com/ieee8023/covid-chestxray-dataset",
            licence="per image (metadata.csv `license`: Apache 2.0, CC BY-NC-SA 4.0, CC BY 4.0, ...); "
            "metadata CC BY-NC-SA 4.0",
            citation="J. P. Cohen, P. Morrison, L. Dao, K. Roth, T. Q. Duong, M. Ghassemi. COVID-19 image "
            "data collection: prospective predictions are the future. arXiv:2006.11988 (2020).",
            github_repo="ieee8023/covid-chestxray-dataset",
            github_commit="0f7245db6f5aa4001ea75cf69fe6cfe091928403",
            metadata_file="metadata.csv",
            expected_images={"images": 660},
        ),
        Source(
            key="figure1",
            folder="Figure1-COVID-chestxray-dataset",
            title="Figure 1 COVID-19 chest X-ray dataset (COVID-Net initiative)",
            url="https://github.com/agchung/Figure1-COVID-chestxray-dataset",
            licence="no licence file; 'intended to be used for research purposes only'",
            citation="A. Chung et al. Figure 1 COVID-19 chest X-ray dataset initiative. "
            "https://github.com/agchung/Figure1-COVID-chestxray-dataset (2020).",
            github_repo="agchung/Figure1-COVID-chestxray-dataset",
            github_commit="95bb569e55f4110d3b734c0f355340e04e16989a",
            metadata_file="metadata.csv",
            metadata_encoding="cp1252",  # "38\xb0": a spreadsheet export, not UTF-8
            expected_images={"images": 55},
        ),
        Source(
            key="actualmed",
            folder="Actualmed-COVID-chestxray-dataset",
            title="Actualmed COVID-19 chest X-ray dataset (COVID-Net initiative)",
            url="https://github.com/agchung/Actualmed-COVID-chestxray-dataset",
            licence="no licence file; 'intended to be used for research purposes only'",
            citation="A. Chung et al. Actualmed COVID-19 chest X-ray dataset initiative. "
            "https://github.com/agchung/Actualmed-COVID-chestxray-dataset (2020).",
            github_repo="agchung/Actualmed-COVID-chestxray-dataset",
            github_commit="27240dd8dec9454bc97f9f3c0c432ef434de2517",
            metadata_file="metadata.csv",
            expected_images={"images": 238},
        ),
        Source(
            key="kaggle",
            folder="chest_xray",
            title="Chest X-Ray Images (Pneumonia) (Kermany et al. 2018, Kaggle edition by P. Mooney)",
            url="https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
            licence="CC BY 4.0",
            citation="D. S. Kermany et al. Identifying medical diagnoses and treatable diseases by "
            "image-based deep learning. Cell 172(5):1122-1131 (2018); data: Mendeley Data "
            "doi:10.17632/rscbjbr9sj.2.",
            kaggle_handle="paultimothymooney/chest-xray-pneumonia",
            expected_images={
                "train/NORMAL": 1341, "train/PNEUMONIA": 3875,
                "test/NORMAL": 234, "test/PNEUMONIA": 390,
                "val/NORMAL": 8, "val/PNEUMONIA": 8,
            },
        ),
    )
}


class MissingSourceError(FileNotFoundError):
    """A source is not on disk; the message names it and the command that fetches it."""

    def __init__(self, key: str, where: Path):
        self.key = key
        self.where = where
        super().__init__(
            f"Source '{key}' ({SOURCES[key].title}) is not in {where}. "
            f"Fetch it with:  cxr-data fetch --source {key}   "
            "(add --mirror DIR, or set CXR_DATA_MIRROR, to copy it from a local mirror)."
        )


def get_source(key: str) -> Source:
    """Return the registered source ``key``; the error lists the valid keys."""
    try:
        return SOURCES[key]
    except KeyError:
        raise KeyError(f"unknown source {key!r}; choose from {', '.join(SOURCES)}") from None


def source_dir(key: str, root: Path | None = None, must_exist: bool = True) -> Path:
    """Return ``<data>/raw/<folder>`` for source ``key``.

    Raises:
        MissingSourceError: ``must_exist`` and the folder (or its metadata file) is absent.
    """
    src = get_source(key)
    where = paths.raw_dir(root) / src.folder
    if must_exist:
        marker = where / src.metadata_file if src.metadata_file else where / "train"
        if not marker.exists():
            raise MissingSourceError(key, where)
    return where
