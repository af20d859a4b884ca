"""Regenerate the bundled samples from the MNI ICBM152 2009a T1 template that ships inside nilearn.

    .venv/bin/python data_samples/make_samples.py [--out data_samples]

Writes, through medidiff's own writers (so the samples are also what medidiff produces):

- ``mni152_t1_2mm.nii.gz``: the T1 template cropped to the head and averaged over 2×2×2 blocks (2 mm
  voxels), int16 (0 to 2040: the 0-255 template ×8), RAS, qform/sform code 4 (MNI space);
- ``mni152_t1_2mm_dicom/``: the same voxels as an MR DICOM series (one file per axial slice, 16-bit,
  RescaleSlope 1 / RescaleIntercept 0), a synthetic anonymous patient, fixed UIDs and dates.

The output is byte-for-byte reproducible: no randomness, UIDs derived from a fixed seed, gzip without
timestamps. See data_samples/README.md for provenance and licence.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from medidiff.io import Volume, write_volume

TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
BLOCK = 2
MARGIN_MM = 4
INTENSITY_SCALE = 8
NIFTI_NAME = "mni152_t1_2mm.nii.gz"
DICOM_NAME = "mni152_t1_2mm_dicom"


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """nibabel.load, typed (it is declared to return any image class)."""
    image = nib.load(str(path))
    assert isinstance(image, nib.Nifti1Image)
    return image


def template_path() -> Path:
    """The template file inside the installed nilearn package (found without importing nilearn)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nilearn is not installed: pip install nilearn (the template ships inside it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / TEMPLATE
    if not path.exists():
        raise SystemExit(f"{path} is missing from this nilearn version")
    return path


def make_volume(source: Path) -> Volume:
    """Crop the template to its head bounding box and average 2×2×2 blocks.

    Returns:
        Volume with data (I, J, K) int16 and the affine of the block centres.
    """
    image = _load_nifti(source)
    data = np.asarray(image.dataobj, dtype=np.float64)  # (197, 233, 189), 0..255, 1 mm
    head = np.argwhere(data > 0)
    margin = MARGIN_MM  # 1 mm voxels
    start = np.maximum(head.min(axis=0) - margin, 0)
    stop = np.minimum(head.max(axis=0) + 1 + margin, data.shape)
    size = (stop - start) // BLOCK * BLOCK
    crop = data[start[0] : start[0] + size[0], start[1] : start[1] + size[1], start[2] : start[2] + size[2]]
    blocks = crop.reshape(size[0] // BLOCK, BLOCK, size[1] // BLOCK, BLOCK, size[2] // BLOCK, BLOCK)
    mean = blocks.mean(axis=(1, 3, 5))
    values = np.rint(mean * INTENSITY_SCALE).astype(np.int16)
    # voxel (i, j, k) of the new grid is centred on old index start + BLOCK * (i, j, k) + (BLOCK - 1) / 2
    shift = np.eye(4)
    shift[:3, 3] = start + (BLOCK - 1) / 2
    affine = np.asarray(image.affine, dtype=np.float64) @ shift @ np.diag([BLOCK, BLOCK, BLOCK, 1.0])
    meta = {
        "modality": "MR",
        "series_description": "MNI152 2009a T1 2mm",
        "dtype": "int16",
        "nifti_header": {"qform_code": 4, "sform_code": 4, "xyzt_units": 10},  # MNI space; mm and s
        "patient_name": "MNI152^ICBM2009a",
        "patient_id": "MNI152-2009A",
        "study_description": "medidiff sample (MNI ICBM152 2009a T1)",
        "dicom_uid_seed": "medidiff data_samples mni152_t1_2mm v1",
        "dicom_datetime": "20090101120000",
    }
    return Volume(data=values, affine=affine, meta=meta, source=f"{source} (cropped, {BLOCK} mm)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    args = parser.parse_args()
    volume = make_volume(template_path())
    args.out.mkdir(parents=True, exist_ok=True)
    nifti = args.out / NIFTI_NAME
    dicom = args.out / DICOM_NAME
    write_volume(volume, nifti, overwrite=True)
    if dicom.exists():  # replaced whole so that no stale slice survives a change of size
        shutil.rmtree(dicom)
    write_volume(volume, f"{dicom}/", overwrite=True)
    total = nifti.stat().st_size + sum(f.stat().st_size for f in dicom.iterdir())
    print(f"wrote {nifti} and {dicom}/ ({volume.shape}, {total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
