"""Dataset layouts on disk, each turned into the same case manifest.

Every layout yields :class:`Case` records: case id, site, image path and mask path(s). The
whole gland is ``label > 0`` in every layout; ``allowed_labels`` lists the label values a
mask of that layout may contain.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from prokd.data.io import is_volume_file, volume_stem
from prokd.errors import DataError


@dataclass(frozen=True)
class Case:
    """One 3D volume of a dataset, labelled (with masks) or not.

    Attributes:
        case_id: unique within the dataset (``SITE/CaseNN`` where names repeat across sites).
        site: acquisition site (centre or scanner) the case comes from.
        image: path to the T2w image.
        masks: expert masks; the first is the reference, any others are further readers.
            Empty for an unlabelled volume.
        image_channel: channel of a 4D image that holds T2 (``None`` for 3D images).
        allowed_labels: label values the masks may contain.
        group: patient key; cases of one group always land in the same split.
    """

    case_id: str
    site: str
    image: Path
    masks: tuple[Path, ...]
    image_channel: int | None = None
    allowed_labels: frozenset[int] = field(default=frozenset({0, 1}))
    group: str = ""

    @property
    def patient(self) -> str:
        """Grouping key for splits (the case id unless a group is set)."""
        return self.group or self.case_id

    @property
    def labelled(self) -> bool:
        """Whether the case has a reference mask."""
        return bool(self.masks)


@dataclass(frozen=True)
class Layout:
    """A named on-disk layout: how to recognise it and how to list its cases."""

    name: str
    description: str
    detect: Callable[[Path], bool]
    find_cases: Callable[[Path], list[Case]]


def _subdirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


# --- six-site: <root>/<SITE>/CaseNN.nii.gz + CaseNN_segmentation.nii.gz --------------------

SIX_SITE_MASK_SUFFIXES = ("_segmentation", "_Segmentation")


def _six_site_images(site_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in site_dir.iterdir()
        if is_volume_file(p)
        and not p.name.startswith(".")
        and not volume_stem(p).endswith(SIX_SITE_MASK_SUFFIXES)
    )


def _six_site_dicom_cases(site_dir: Path) -> list[Case]:
    """``<SITE>/CaseNN/`` DICOM series folders beside a ``CaseNN_segmentation`` volume."""
    cases = []
    for folder in _subdirs(site_dir):
        masks = [
            p
            for p in sorted(site_dir.iterdir())
            if is_volume_file(p)
            and volume_stem(p) in (f"{folder.name}{tag}" for tag in SIX_SITE_MASK_SUFFIXES)
        ]
        if masks:
            cases.append(Case(f"{site_dir.name}/{folder.name}", site_dir.name, folder, (masks[0],)))
    return cases


# Beside a six-site dataset: case id -> patient, where several cases are one patient's
# (``prokd simulate`` writes it: a simulated copy is its source volume's patient).
PATIENTS_FILE = "patients.json"


def _six_site_patients(root: Path) -> dict[str, str]:
    path = root / PATIENTS_FILE
    if not path.exists():
        return {}
    try:
        patients = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err})") from None
    if not (isinstance(patients, dict) and all(isinstance(v, str) for v in patients.values())):
        raise DataError(path, "expected a mapping of case id -> patient id")
    return patients


def six_site_cases(root: Path) -> list[Case]:
    cases = []
    for site_dir in _subdirs(root):
        for image in _six_site_images(site_dir):
            stem = volume_stem(image)
            suffix = image.name[len(stem) :]
            candidates = [site_dir / f"{stem}{tag}{suffix}" for tag in SIX_SITE_MASK_SUFFIXES]
            mask = next((c for c in candidates if c.exists()), candidates[0])
            cases.append(Case(f"{site_dir.name}/{stem}", site_dir.name, image, (mask,)))
        cases += _six_site_dicom_cases(site_dir)
    patients = _six_site_patients(root)
    return [replace(c, group=patients.get(c.case_id, "")) for c in cases]


def _detect_six_site(root: Path) -> bool:
    return any(
        any(volume_stem(p).endswith(SIX_SITE_MASK_SUFFIXES) for p in site_dir.iterdir())
        for site_dir in _subdirs(root)
    )


# --- msd: Medical Segmentation Decathlon Task05 ------------------------------------------


def msd_cases(root: Path) -> list[Case]:
    manifest = root / "dataset.json"
    try:
        entries = json.loads(manifest.read_text())["training"]
    except FileNotFoundError:
        raise DataError(manifest, "file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(manifest, f"not a valid MSD dataset.json ({err})") from None
    cases = []
    for entry in entries:
        image = (root / entry["image"]).resolve()
        cases.append(
            Case(
                volume_stem(image),
                "MSD",
                image,
                ((root / entry["label"]).resolve(),),
                image_channel=0,
                allowed_labels=frozenset({0, 1, 2}),
            )
        )
    return cases


def _detect_msd(root: Path) -> bool:
    return (root / "dataset.json").is_file() and (root / "imagesTr").is_dir()


# --- promise12: CaseNN.mhd + CaseNN_segmentation.mhd ---------------------------------------


def promise12_cases(root: Path) -> list[Case]:
    cases = []
    for image in sorted(root.glob("Case*.mh[ad]")):
        stem = volume_stem(image)
        if stem.lower().endswith("_segmentation"):
            continue
        mask = image.with_name(f"{stem}_segmentation{image.suffix}")
        cases.append(Case(stem, "PROMISE12", image, (mask,)))
    return cases


def _detect_promise12(root: Path) -> bool:
    return any(root.glob("Case*_segmentation.mh[ad]"))


# --- prostate158: <root>/<case>/t2.nii.gz + t2_anatomy_reader1.nii.gz ------------------------

P158_READERS = ("t2_anatomy_reader1.nii.gz", "t2_anatomy_reader2.nii.gz")


def prostate158_cases(root: Path) -> list[Case]:
    cases = []
    for case_dir in _subdirs(root):
        if not (case_dir / "t2.nii.gz").exists():
            continue
        masks = [case_dir / P158_READERS[0]]
        masks += [case_dir / r for r in P158_READERS[1:] if (case_dir / r).exists()]
        cases.append(
            Case(
                case_dir.name,
                "Prostate158",
                case_dir / "t2.nii.gz",
                tuple(masks),
                allowed_labels=frozenset({0, 1, 2}),
            )
        )
    return cases


def _detect_prostate158(root: Path) -> bool:
    return any(
        (d / "t2.nii.gz").exists() and (d / P158_READERS[0]).exists() for d in _subdirs(root)
    )


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "six-site",
            "<root>/<SITE>/CaseNN.nii.gz (or a CaseNN/ DICOM series) + CaseNN_segmentation.nii.gz",
            _detect_six_site,
            six_site_cases,
        ),
        Layout(
            "msd",
            "dataset.json + imagesTr/ + labelsTr/ (4D images, channel 0 = T2)",
            _detect_msd,
            msd_cases,
        ),
        Layout(
            "promise12",
            "<root>/CaseNN.mhd + CaseNN_segmentation.mhd",
            _detect_promise12,
            promise12_cases,
        ),
        Layout(
            "prostate158",
            "<root>/<case>/t2.nii.gz + t2_anatomy_reader1.nii.gz [+ reader2]",
            _detect_prostate158,
            prostate158_cases,
        ),
    )
}


def detected_layout(root: str | Path) -> list[str]:
    """Names of the layouts the files at ``root`` match (none for a plain folder)."""
    root = Path(root)
    return (
        [name for name, layout in LAYOUTS.items() if layout.detect(root)] if root.is_dir() else []
    )


def detect_layout(root: str | Path) -> str:
    """Name of the layout of the dataset at ``root``.

    Raises:
        DataError: ``root`` is not a folder, or matches no layout or several.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "data folder not found")
    found = detected_layout(root)
    if not found:
        known = ", ".join(LAYOUTS)
        raise DataError(root, f"no known dataset layout found (known: {known}); see --layout")
    if len(found) > 1:
        raise DataError(root, f"ambiguous layout (matches {', '.join(found)}); pass --layout")
    return found[0]


def find_cases(root: str | Path, layout: str | None = None) -> tuple[str, list[Case]]:
    """The layout name and case manifest of the dataset at ``root``.

    Args:
        root: dataset folder.
        layout: layout name; detected from the files when ``None``.

    Raises:
        DataError: unknown layout, unreadable layout files, or no cases found.
    """
    root = Path(root)
    if layout is None:
        layout = detect_layout(root)
    elif layout not in LAYOUTS:
        raise DataError(root, f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    elif not root.is_dir():
        raise DataError(root, "data folder not found")
    cases = LAYOUTS[layout].find_cases(root)
    if not cases:
        raise DataError(root, f"no cases found for layout {layout!r}")
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise DataError(root, "duplicate case ids in the dataset")
    return layout, cases


# --- unlabelled volumes: a known layout read without masks, or a plain folder ---------------

# Names that mark a label volume in the known layouts, and prokd's own outputs.
MASK_MARKERS = ("_segmentation", "_probabilities", "_anatomy_reader", "_label", "_mask")


def is_image_file(path: Path) -> bool:
    """A volume file that is not a mask: no mask marker in its name, not under ``labels*``."""
    if not (path.is_file() and is_volume_file(path)):
        return False
    stem = volume_stem(path).lower()
    in_labels = any(part.lower().startswith("labels") for part in path.parent.parts)
    return not in_labels and not any(marker in stem for marker in MASK_MARKERS)


def is_dicom_folder(folder: Path) -> bool:
    """A folder in no known layout and with no volume file under it: read as DICOM studies."""
    return (
        folder.is_dir()
        and not detected_layout(folder)
        and not any(p.is_file() and is_volume_file(p) for p in folder.rglob("*"))
    )


def image_volumes(folder: str | Path) -> list[tuple[Path, int | None]]:
    """The image volumes of a folder as (path, T2 channel) pairs.

    A folder in a known layout gives its cases' images (the T2 channel of 4D MSD images);
    any other folder is searched recursively for volume files, skipping files named like
    masks (``*_segmentation``, ``*_mask``, ``labels*/`` ...).

    Raises:
        DataError: the folder is missing, or holds no image volume.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    if detected_layout(folder):
        _, cases = find_cases(folder)
        found = [(case.image, case.image_channel) for case in cases]
    else:
        found = [(p, None) for p in sorted(folder.rglob("*")) if is_image_file(p)]
    if not found:
        raise DataError(folder, "no image volumes found (mask files are skipped)")
    return found


def unlabelled_cases(folder: str | Path, channel: int | None = None) -> list[Case]:
    """Every image volume of ``folder`` as an unlabelled case (its masks, if any, unused).

    Case ids are ``<folder name>/<case id in the layout>`` for a known layout (whose sites
    are kept), and ``<folder name>/<path inside the folder>`` for a plain folder (whose site
    is the folder's name; ``channel`` is the T2 channel of its 4D images). Each volume is its
    own patient. A folder with no volume file gives the series ``prokd predict`` would choose
    in each DICOM study under it (:func:`dicom_cases`).

    Raises:
        DataError: the folder is missing, or holds no image volume or DICOM series.
    """
    folder = Path(folder)
    name = folder.resolve().name
    if is_dicom_folder(folder):
        return dicom_cases(folder)
    if folder.is_dir() and detected_layout(folder):
        _, cases = find_cases(folder)
        return [Case(f"{name}/{c.case_id}", c.site, c.image, (), c.image_channel) for c in cases]
    cases = []
    for path, _ in image_volumes(folder):
        inner = path.resolve().relative_to(folder.resolve())
        cases.append(Case(f"{name}/{inner.parent / volume_stem(path)}", name, path, (), channel))
    return cases


def dicom_cases(folder: Path) -> list[Case]:
    """The chosen series of every DICOM study under ``folder`` as unlabelled cases: id
    ``<folder name>/<series folder inside it>``, site the folder's name, one patient per
    PatientID (two studies of one patient stay on one side of a split). Where one folder
    holds the chosen series of several studies (a flat PACS export), each case is that
    series' first file (which reads as its series), its id the folder's with
    ``/<PatientID>-<end of the StudyInstanceUID>`` added.

    Raises:
        DataError: no DICOM image series, or a study whose T2 cannot be told.
    """
    from prokd.data.dicom import by_study, choose_series, find_series

    name = folder.resolve().name
    series = find_series(folder)
    if not series:
        raise DataError(folder, "no image volumes or DICOM series found (mask files are skipped)")
    chosen_series = [choose_series(study) for study in by_study(series)]
    sharing = Counter(chosen.folder for chosen in chosen_series)
    cases = []
    for chosen in chosen_series:
        inner = chosen.folder.resolve().relative_to(folder.resolve())
        case_id = f"{name}/{inner.as_posix()}" if inner.parts else name
        image = chosen.folder
        if sharing[chosen.folder] > 1:
            case_id += f"/{chosen.patient_id or 'study'}-{chosen.study_uid[-8:]}"
            image = chosen.files[0]
        group = f"{name}/{chosen.patient_id}" if chosen.patient_id else case_id
        cases.append(Case(case_id, name, image, (), group=group))
    return cases
