"""From four raw sources to the course's three-class data set, one visible rule at a time.

:func:`curate` applies the rules of :data:`RULES` in order. Every image any source describes gets a
row in ``curation_report.csv`` saying which rule removed it (or that it was kept), so each count in
the lesson can be traced back to files. Then duplicates are grouped across sources, and the kept
images are split by *patient group* into train / val / test. The result is written once to
``<CXR_DATA_DIR>/curated/``:

- ``manifest.csv``          the kept images with ``path, label, source, patient_id, view, split, ...``
- ``curation_report.csv``   every listed image with its fate (``kept`` or the rule that removed it)
- ``duplicates.csv``        every pair of images found to show the same picture, and what was done

The split is written once: running curation again with the same data and settings reproduces the
manifest byte for byte; if it would change, :func:`curate` refuses unless ``force=True``, because
later lessons and trained models rely on the test split never moving.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from cxr_utils import CLASSES, atomic, paths
from cxr_utils.images import ImageError, image_info, read_image
from cxr_utils.metadata import all_records
from cxr_utils.sources import SOURCES

KEPT = "kept"

RULES: dict[str, str] = {
    "unsafe_name": "file name in the metadata points outside the source folder (refused, never opened)",
    "absent": "image file not in this copy of the source (listed in the metadata only)",
    "listed_twice": "same file listed twice in the metadata (the first row is kept)",
    "not_xray": "not an X-ray (CT slices)",
    "not_frontal": "not a frontal view (lateral, or a CT plane)",
    "class_not_used": "a finding the paper did not take from this source "
    "(it took COVID-19 from the three COVID collections and Normal/Pneumonia from Kaggle only)",
    "unreadable": "image file cannot be decoded (truncated, corrupt, not an image, too large)",
    "duplicate": "the same picture as another kept image (one copy is kept)",
    "conflicting_duplicate": "the same picture appears under two different labels (all copies dropped)",
    "kaggle_patient_leak": "Kaggle train image of a patient id that also appears in Kaggle's test/val folders",
}
"""Every rule, in the order applied, with the sentence the lesson and reports use for it."""

KNOWN_RECROPS: tuple[tuple[str, str, str], ...] = (
    # Re-cropped or re-scaled copies that a whole-image perceptual hash cannot see. Found by keypoint
    # matching (ORB + RANSAC + normalised cross-correlation >= 0.985); see cxr-mirror PROVENANCE.md.
    ("raw/Figure1-COVID-chestxray-dataset/images/COVID-00001.jpg",
     "raw/covid-chestxray-dataset/images/figure1-5e73d7ae897e27ff066a30cb-98.jpeg", "re-cropped copy"),
    ("raw/Figure1-COVID-chestxray-dataset/images/COVID-00003a.jpg",
     "raw/covid-chestxray-dataset/images/figure1-5e7c1b8d98c29ab001275405-98.jpeg", "re-cropped copy"),
    ("raw/Figure1-COVID-chestxray-dataset/images/COVID-00003b.jpg",
     "raw/covid-chestxray-dataset/images/figure1-5e7c1b8d98c29ab001275405-98-later.jpeg", "re-cropped copy"),
    ("raw/Figure1-COVID-chestxray-dataset/images/COVID-00045.png",
     "raw/covid-chestxray-dataset/images/16654_1_1.png", "re-cropped copy (Eurorad 16654)"),
    ("raw/covid-chestxray-dataset/images/2-chest-filmc.jpg",
     "raw/covid-chestxray-dataset/images/7-fatal-covid19.jpg", "re-cropped copy (radiologyassistant.nl)"),
    ("raw/covid-chestxray-dataset/images/pneumonia-7.jpg",
     "raw/covid-chestxray-dataset/images/streptococcus-pneumoniae-pneumonia-temporal-evolution-1-day1.jpg",
     "re-cropped copy"),
)

SOURCE_PRIORITY = ("kaggle", "cohen", "figure1", "actualmed")
"""Which copy of a duplicated picture is kept: the first source in this order, then the first path."""


@dataclass(frozen=True)
class CurationConfig:
    """The settings of a curation run; they are recorded next to the manifest."""

    seed: int = 2020
    covid_test_fraction: float = 0.20
    """Share of COVID-19 images (by patient group) that goes to test; the paper had 100 of 498."""
    val_fraction: float = 0.15
    """Share of each class's remaining images (by patient group) held out for validation."""
    phash_max_distance: int = 8
    """Two images are duplicate candidates when their 64-bit pHashes differ in at most this many bits ..."""
    min_correlation: float = 0.97
    """... and their 32x32 thumbnails correlate at least this much (pHash alone confuses look-alike films)."""
    keep_unspecified_view: bool = True
    """Keep images whose metadata gives no view (Figure 1 leaves most blank; they are frontal)."""
    drop_kaggle_patient_leak: bool = True
    """Drop Kaggle train images of patient ids that are also in Kaggle's test/val folders."""


# ----------------------------------------------------------------------------------------------
# Rules on metadata


def label_for(source: str, finding: str) -> str | None:
    """Return the course label of an image from ``source`` with metadata ``finding``, or None if unused.

    The paper took COVID-19 from the three COVID-19 collections and Normal and Pneumonia only from
    the Kaggle set (its Normal/Pneumonia counts are exactly Kaggle's), so e.g. Cohen's "Streptococcus"
    or Actualmed's "No finding" images are not used.
    """
    finding = (finding or "").strip()
    if source == "kaggle":
        return "Normal" if finding == "Normal" else "Pneumonia" if finding.startswith("Pneumonia") else None
    if source in ("cohen", "figure1", "actualmed") and re.match(r"covid-19\b", finding, flags=re.I):
        return "COVID-19"
    return None


def view_kind(view: str) -> str:
    """Classify a metadata view: ``frontal`` (PA, AP, AP Supine, AP erect ...), ``lateral``, ``ct``,
    ``unspecified`` (blank) or ``other``."""
    v = (view or "").strip().lower()
    if not v:
        return "unspecified"
    if re.match(r"^(pa|ap)\b", v):
        return "frontal"
    if v in ("l", "lateral", "ll", "lat") or v.startswith("lateral"):
        return "lateral"
    if v in ("axial", "coronal", "sagittal"):
        return "ct"
    return "other"


def apply_metadata_rules(records: pd.DataFrame, config: CurationConfig) -> pd.DataFrame:
    """Return ``records`` with ``label`` and ``fate`` columns from the metadata-only rules.

    ``fate`` is ``kept`` or the key of the first rule of :data:`RULES` that removes the row.
    """
    df = records.copy()
    df["label"] = [label_for(s, f) for s, f in zip(df["source"], df["finding"], strict=True)]
    kinds = df["view"].map(view_kind)
    fate = pd.Series(KEPT, index=df.index)

    def drop(mask: pd.Series, rule: str) -> None:
        fate[(fate == KEPT) & mask] = rule

    drop(df["problem"] != "", "unsafe_name")
    drop(~df["present"].astype(bool), "absent")
    drop(df["path"].duplicated(keep="first") & (df["path"] != ""), "listed_twice")
    drop(df["modality"].str.strip().str.lower().isin(["ct"]), "not_xray")
    allowed = {"frontal", "unspecified"} if config.keep_unspecified_view else {"frontal"}
    drop(~kinds.isin(allowed), "not_frontal")
    drop(df["label"].isna(), "class_not_used")
    df["view_kind"] = kinds
    df["fate"] = fate
    return df


# ----------------------------------------------------------------------------------------------
# Pixels: decode check, perceptual hash, thumbnails


def _features_one(full: Path) -> tuple[dict, int, np.ndarray | None]:
    """Decode one image; return (info, 64-bit pHash, normalised 32x32 thumbnail) or an error reason."""
    try:
        info = image_info(full)
        small = read_image(full, channels=1, size=(128, 128))
    except ImageError as exc:
        return {"error": exc.reason}, 0, None
    pil = Image.fromarray(small)
    bits = imagehash.phash(pil).hash.flatten()
    code = int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])
    thumb = np.asarray(pil.resize((32, 32), Image.Resampling.BOX), dtype=np.float32).ravel()
    thumb = (thumb - thumb.mean()) / (thumb.std() + 1e-6) / np.sqrt(thumb.size)
    meta = {"format": info.format, "mode": info.mode, "width": info.width, "height": info.height, "error": ""}
    return meta, code, thumb


def image_features(rel_paths: Iterable[str], root: Path, progress: bool = True) -> pd.DataFrame:
    """Decode every image once; return a table indexed by path with ``format, mode, width, height, error,
    phash`` (int) and ``thumb`` (a unit-norm 1024-vector, or None when the image could not be decoded).

    Results are cached in ``curated/.image_features.pkl`` keyed by path, size and modification time,
    so curating again after a small change only decodes what changed.
    """
    rel_paths = list(rel_paths)
    cache_file = paths.curated_dir(root) / ".image_features.pkl"
    cache: dict = {}
    if cache_file.exists():
        try:
            cache = pd.read_pickle(cache_file)
        except Exception:  # a corrupt cache is just rebuilt
            cache = {}
    rows, fresh = {}, 0
    for rel in tqdm(rel_paths, desc="Decoding and hashing images", unit="img", disable=not progress,
                    mininterval=1.0):
        full = root / rel
        st = full.stat()
        key = (rel, st.st_size, st.st_mtime_ns)
        if key not in cache:
            cache[key] = _features_one(full)
            fresh += 1
        meta, code, thumb = cache[key]
        rows[rel] = {**{"format": "", "mode": "", "width": 0, "height": 0}, **meta, "phash": code, "thumb": thumb}
    if fresh:
        keep = {k: v for k, v in cache.items() if k[0] in rows}
        with atomic.replacing(cache_file) as tmp:
            pd.to_pickle(keep, tmp)
    return pd.DataFrame.from_dict(rows, orient="index")


def find_duplicate_pairs(features: pd.DataFrame, config: CurationConfig) -> pd.DataFrame:
    """Return every pair of images that show the same picture: ``a, b, phash_distance, correlation, how``.

    A pair qualifies when the pHashes differ in at most ``config.phash_max_distance`` bits and the
    thumbnails correlate at least ``config.min_correlation``; pairs in :data:`KNOWN_RECROPS` are added
    when both files are present (``how`` says which test found the pair).
    """
    ok = features[features["thumb"].notna()]
    names = ok.index.to_numpy()
    codes = ok["phash"].to_numpy(dtype=np.uint64)
    thumbs = np.stack(ok["thumb"].to_list()) if len(ok) else np.zeros((0, 1024), np.float32)
    found = []
    block = 1024
    for start in range(0, len(names), block):
        stop = min(start + block, len(names))
        dist = np.bitwise_count(codes[start:stop, None] ^ codes[None, :])
        rows, cols = np.nonzero(dist <= config.phash_max_distance)
        keep = cols > rows + start  # upper triangle only
        for i, j in zip(rows[keep] + start, cols[keep], strict=True):
            corr = float(thumbs[i] @ thumbs[j])
            if corr >= config.min_correlation:
                found.append((names[i], names[j], int(dist[i - start, j]), round(corr, 4), "perceptual hash"))
    present = set(names)
    for a, b, why in KNOWN_RECROPS:
        if a in present and b in present:
            ia, ib = np.flatnonzero(names == a)[0], np.flatnonzero(names == b)[0]
            dist = int(np.bitwise_count(codes[ia] ^ codes[ib]))
            found.append((a, b, dist, round(float(thumbs[ia] @ thumbs[ib]), 4), f"known {why}"))
    pairs = pd.DataFrame(found, columns=["a", "b", "phash_distance", "correlation", "how"])
    return pairs.drop_duplicates(subset=["a", "b"]).sort_values(["a", "b"]).reset_index(drop=True)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the smallest id names the group


# ----------------------------------------------------------------------------------------------
# Splitting by patient group


def _rank(seed: int, purpose: str, key: str) -> str:
    """A stable pseudo-random order: the same for the same seed, whatever the row order."""
    return hashlib.sha256(f"{seed}:{purpose}:{key}".encode()).hexdigest()


def _take_fraction(groups: pd.DataFrame, fraction: float, seed: int, purpose: str) -> set[str]:
    """Pick groups, in seeded hash order, until they hold ``fraction`` of the images in ``groups``."""
    order = groups.assign(r=[_rank(seed, purpose, g) for g in groups.index]).sort_values("r")
    target = fraction * order["n"].sum()
    taken, total = set(), 0
    for group, n in order["n"].items():
        if total >= target:
            break
        taken.add(group)
        total += n
    return taken


def assign_splits(kept: pd.DataFrame, config: CurationConfig) -> pd.Series:
    """Return the split (``train``/``val``/``test``) of each kept image, by patient group.

    - groups holding a Kaggle test or val image go to ``test`` (the paper's test set is Kaggle's
      test + val for Normal and Pneumonia);
    - of the other groups whose images are COVID-19, ``covid_test_fraction`` of the images go to
      ``test``;
    - of what remains, ``val_fraction`` of each class's images go to ``val``, the rest to ``train``.

    Groups are chosen in an order fixed by hashing ``seed`` with the group id, so the split does not
    depend on row order and is the same on every machine.
    """
    per_group = kept.groupby("split_group").agg(
        n=("path", "size"),
        label=("label", lambda s: s.value_counts().index[0]),
        forced_test=("kaggle_split", lambda s: bool(s.isin(["test", "val"]).any())),
    )
    split = pd.Series("train", index=per_group.index)
    split[per_group["forced_test"]] = "test"
    open_groups = per_group[~per_group["forced_test"]]
    covid = open_groups[open_groups["label"] == "COVID-19"]
    split[list(_take_fraction(covid, config.covid_test_fraction, config.seed, "test"))] = "test"
    for label in CLASSES:
        candidates = open_groups[(open_groups["label"] == label) & (split[open_groups.index] == "train")]
        split[list(_take_fraction(candidates, config.val_fraction, config.seed, f"val:{label}"))] = "val"
    return kept["split_group"].map(split)


# ----------------------------------------------------------------------------------------------
# The whole run


MANIFEST_COLUMNS = [
    "path", "label", "source", "patient_id", "view", "split", "split_group", "finding",
    "age", "sex", "kaggle_split", "format", "mode", "width", "height", "phash",
]


class CurationChangedError(RuntimeError):
    """Curation would change an existing manifest (and so the split every lesson relies on)."""


@dataclass
class CurationResult:
    """What :func:`curate` produced: the manifest, the per-image report, the duplicate pairs."""

    manifest: pd.DataFrame
    report: pd.DataFrame
    duplicates: pd.DataFrame
    config: CurationConfig = field(default_factory=CurationConfig)
    status: str = ""

    def funnel(self) -> pd.DataFrame:
        """Images removed by each rule, in order, with the number left after each step."""
        counts = self.report["fate"].value_counts()
        rows, left = [], len(self.report)
        rows.append({"step": "listed by the four sources", "removed": 0, "left": left, "rule": ""})
        for rule, text in RULES.items():
            n = int(counts.get(rule, 0))
            left -= n
            rows.append({"step": text, "removed": n, "left": left, "rule": rule})
        return pd.DataFrame(rows)

    def counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns), with totals."""
        table = pd.crosstab(self.manifest["label"], self.manifest["split"], margins=True, margins_name="total")
        table = table.reindex(index=[*CLASSES, "total"], columns=["train", "val", "test", "total"], fill_value=0)
        return table

    def linked_patients(self) -> pd.DataFrame:
        """The patient groups that join more than one patient id, because a picture of one is also filed under another.

        Counted over every image the metadata rules kept, the duplicate copies included (the copy that linked
        two ids is often the one curation dropped). One row per group: ``patient ids``, ``sources``,
        ``images`` (before removing duplicates) and ``kept`` (in the manifest), sorted by group.
        """
        linking = [KEPT, "duplicate", "conflicting_duplicate", "kaggle_patient_leak"]
        seen = self.report[self.report["fate"].isin(linking)]
        groups = seen.groupby("split_group")
        table = pd.DataFrame({
            "patient ids": groups["patient_id"].agg(lambda s: ", ".join(sorted(set(s)))),
            "ids": groups["patient_id"].nunique(),
            "sources": groups["source"].agg(lambda s: ", ".join(sorted(set(s)))),
            "images": groups.size(),
            "kept": groups["fate"].agg(lambda s: int((s == KEPT).sum())),
        })
        return table[table["ids"] > 1].drop(columns="ids")

    def skipped(self) -> pd.DataFrame:
        """Images that could not be decoded, with the reason."""
        return self.report.loc[self.report["fate"] == "unreadable", ["path", "source", "detail"]]

    def summary(self) -> str:
        """A few lines for the command line: counts per split and class, and what was removed."""
        c = self.counts()
        lines = [
            f"Curated {len(self.manifest)} images ({self.status}):",
            *("  " + ln for ln in c.to_string().splitlines()),
            "Removed: " + ", ".join(
                f"{r.removed} {r.rule}" for r in self.funnel().itertuples() if r.removed and r.rule),
        ]
        n_bad = len(self.skipped())
        if n_bad:
            lines.append(f"{n_bad} unreadable image(s) skipped; reasons in curated/curation_report.csv")
        lines.append("Written: curated/manifest.csv, curated/curation_report.csv, curated/duplicates.csv")
        return "\n".join(lines)


def _dedupe(df: pd.DataFrame, pairs: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.DataFrame]:
    """Resolve duplicate groups among kept rows; return (fate updates, details, pairs with actions)."""
    uf = _UnionFind()
    for a, b in zip(pairs["a"], pairs["b"], strict=True):
        uf.union(a, b)
    fate = pd.Series(dtype=object)
    detail = pd.Series(dtype=object)
    by_path = df.set_index("path")
    groups: dict[str, list[str]] = {}
    for p in set(pairs["a"]) | set(pairs["b"]):
        groups.setdefault(uf.find(p), []).append(p)
    action = {}
    for members in groups.values():
        labels = set(by_path.loc[members, "label"])
        if len(labels) > 1:
            for m in members:
                fate[m] = "conflicting_duplicate"
                others = ", ".join(f"{o} ({by_path.at[o, 'label']})" for o in sorted(members) if o != m)
                detail[m] = f"labelled {by_path.at[m, 'label']}; same picture as {others}"
                action[m] = "dropped (conflicting labels)"
            continue
        best = sorted(members, key=lambda m: (SOURCE_PRIORITY.index(by_path.at[m, "source"]), m))[0]
        action[best] = "kept"
        for m in members:
            if m != best:
                fate[m] = "duplicate"
                detail[m] = f"same picture as {best}"
                action[m] = f"dropped (copy of {best})"
    pairs = pairs.assign(action_a=pairs["a"].map(action), action_b=pairs["b"].map(action))
    return fate, detail, pairs


def curate(
    root: Path | None = None,
    force: bool = False,
    progress: bool = True,
    config: CurationConfig | None = None,
    sources: tuple[str, ...] | None = None,
) -> CurationResult:
    """Apply every rule to the fetched sources and write the manifest and reports (see module docstring).

    Args:
        root: the data root (default ``CXR_DATA_DIR``); the sources must be under ``root/raw``.
        force: replace an existing manifest even if the split would change (a ``.bak`` copy is kept).
        progress: show a progress bar while images are decoded.
        config: curation settings (default :class:`CurationConfig`).
        sources: curate only these source keys (default: all four; the course needs all four).

    Returns:
        The :class:`CurationResult`; its ``status`` says whether the manifest was written,
        unchanged or replaced.

    Raises:
        MissingSourceError: a source has not been fetched (the message gives the command).
        CurationChangedError: the manifest exists and would change, and ``force`` is False.
    """
    root = Path(root) if root else paths.data_dir()
    config = config or CurationConfig()
    paths.curated_dir(root).mkdir(parents=True, exist_ok=True)  # an unwritable folder fails now, not after the work
    df = apply_metadata_rules(all_records(root, keys=sources), config)
    df["detail"] = ""
    df.loc[df["fate"] == "unsafe_name", "detail"] = df["problem"]

    # Decode every image that survived the metadata rules, once.
    todo = df.loc[df["fate"] == KEPT, "path"]
    feats = image_features(todo, root, progress=progress)
    errors = df["path"].map(feats["error"]).fillna("")
    bad = (df["fate"] == KEPT) & (errors != "")
    df.loc[bad, "fate"] = "unreadable"
    df.loc[bad, "detail"] = errors[bad]
    for col in ("format", "mode", "width", "height", "phash"):
        df[col] = df["path"].map(feats[col])

    # Duplicates, grouped across sources before any split.
    alive = df.loc[df["fate"] == KEPT, "path"]
    pairs = find_duplicate_pairs(feats.loc[alive], config)
    dup_fate, dup_detail, pairs = _dedupe(df[df["fate"] == KEPT], pairs)
    idx = df["path"].isin(dup_fate.index) & (df["fate"] == KEPT)
    df.loc[idx, "fate"] = df.loc[idx, "path"].map(dup_fate)
    df.loc[idx, "detail"] = df.loc[idx, "path"].map(dup_detail)

    # Patient groups: patients linked by a shared picture are one group, so they share a split.
    uf = _UnionFind()
    patient_of = df.set_index("path")["patient_id"]
    for a, b in zip(pairs["a"], pairs["b"], strict=True):
        uf.union(patient_of[a], patient_of[b])
    df["split_group"] = df["patient_id"].map(uf.find)

    # Kaggle's own split reuses patient ids across its train and test folders.
    if config.drop_kaggle_patient_leak:
        kept = df["fate"] == KEPT
        test_groups = set(df.loc[kept & df["kaggle_split"].isin(["test", "val"]), "split_group"])
        leak = kept & (df["kaggle_split"] == "train") & df["split_group"].isin(test_groups)
        df.loc[leak, "fate"] = "kaggle_patient_leak"
        df.loc[leak, "detail"] = "patient " + df.loc[leak, "patient_id"] + " also has images in Kaggle test/val"

    kept = df[df["fate"] == KEPT].copy()
    kept["split"] = assign_splits(kept, config)
    kept["view"] = kept["view"].where(kept["view"].str.strip() != "", "unspecified")
    kept["phash"] = kept["phash"].map(lambda c: f"{int(c):016x}")
    kept[["width", "height"]] = kept[["width", "height"]].astype(int)
    manifest = kept[MANIFEST_COLUMNS].sort_values(["split", "label", "path"]).reset_index(drop=True)
    report = df[["path", "source", "ref", "patient_id", "split_group", "label", "finding", "view", "modality", "fate",
                 "detail"]]
    result = CurationResult(manifest=manifest, report=report, duplicates=pairs, config=config)
    result.status = _write_outputs(result, root, force)
    return result


def _write_outputs(result: CurationResult, root: Path, force: bool) -> str:
    out = paths.curated_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    target = paths.manifest_path(root)
    new_text = result.manifest.to_csv(index=False, lineterminator="\n")
    status = "written"
    if target.exists():
        old_text = target.read_text()
        if old_text == new_text:
            status = "unchanged: the split written before is reproduced exactly"
        else:
            old = pd.read_csv(target, dtype=str, keep_default_na=False)
            key = ["path", "label", "split"]
            old_keys = set(map(tuple, old[key].to_numpy()))
            changed = len(old_keys ^ set(map(tuple, result.manifest[key].astype(str).to_numpy())))
            status = "updated: same images, labels and split; other columns changed" if changed == 0 else status
        if status == "written" and target.exists() and not force:
            raise CurationChangedError(
                f"{target} exists and curation now gives a different split ({changed} image/label/split "
                "entries differ). Lessons and trained models rely on the split being written once. "
                "If the change is intended, run `cxr-data curate --force` (the old file is kept as "
                "manifest.csv.bak) and retrain."
            )
        if status == "written" and target.exists():
            atomic.write_bytes(target.with_name("manifest.csv.bak"), target.read_bytes())
            status = "replaced (previous manifest kept as manifest.csv.bak)"
    # Every file atomically, the manifest last: an interrupted curation leaves the old manifest in place.
    atomic.write_csv(out / "curation_report.csv", result.report)
    atomic.write_csv(out / "duplicates.csv", result.duplicates)
    settings = {"config": asdict(result.config), "sources": {k: s.github_commit or s.kaggle_handle
                                                             for k, s in SOURCES.items()}}
    atomic.write_json(out / "curation_config.json", settings)
    if not status.startswith("unchanged"):
        atomic.write_text(target, new_text)
    return status


def load_result(root: Path | None = None) -> CurationResult:
    """Read the outputs of an earlier :func:`curate` run back into a :class:`CurationResult`."""
    out = paths.curated_dir(root)
    if not paths.manifest_path(root).exists():
        raise FileNotFoundError(f"No manifest in {out}. Run `cxr-data curate` first.")

    def read(name: str) -> pd.DataFrame:
        return pd.read_csv(out / name, dtype=str, keep_default_na=False)

    cfg = json.loads((out / "curation_config.json").read_text())["config"]
    return CurationResult(read("manifest.csv"), read("curation_report.csv"), read("duplicates.csv"),
                          CurationConfig(**cfg), status="read from disk")
