"""Writing a :class:`Volume` as a derived DICOM series (one single-frame file per slice).

The series is new (new SeriesInstanceUID, new SOPInstanceUIDs, ImageType DERIVED\\SECONDARY, a
SeriesDescription ending in " medidiff") but belongs to the same patient, study and frame of reference as
its source when the volume came from DICOM (``meta["dicom_headers"]``), so PACS and viewers file it next to
the original. Without a DICOM source, a synthetic anonymous patient and a new study are made.

Pixels are 16-bit: integer data that fits is stored as is (RescaleSlope 1, RescaleIntercept 0); anything
else (float results, wide integers) is mapped linearly onto 0..65535 with RescaleSlope/RescaleIntercept,
which loses at most half a slope step per voxel.

Reproducible output (used by data_samples/make_samples.py): ``meta["dicom_uid_seed"]`` derives every new
UID from that string, and ``meta["dicom_datetime"]`` ("YYYYMMDDHHMMSS") replaces the current time.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np

from medidiff import __version__
from medidiff.io.geometry import dicom_plane_geometry, slice_positions
from medidiff.io.volume import Volume

_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
_SOP_CLASS = {"MR": _MR_STORAGE, "CT": _CT_STORAGE}

# Copied from the source: patient, study, frame of reference, and series context.
_IDENTITY_TAGS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "OtherPatientIDsSequence",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "PatientPosition",
    "BodyPartExamined",
    "Laterality",
)
# Acquisition attributes the MR and CT image modules require (type 1/2); copied when the source has them.
_ACQUISITION_TAGS = {
    "MR": (
        "ScanningSequence",
        "SequenceVariant",
        "ScanOptions",
        "MRAcquisitionType",
        "SequenceName",
        "RepetitionTime",
        "EchoTime",
        "InversionTime",
        "EchoTrainLength",
        "FlipAngle",
        "MagneticFieldStrength",
        "ImagingFrequency",
        "ImagedNucleus",
    ),
    "CT": ("KVP", "XRayTubeCurrent", "ConvolutionKernel", "ExposureTime"),
}
# What those modules need when nothing can be copied ("" = present but empty, type 2).
_ACQUISITION_DEFAULTS = {
    "MR": {
        "ScanningSequence": "RM",
        "SequenceVariant": "NONE",
        "ScanOptions": "",
        "MRAcquisitionType": "",
        "RepetitionTime": "",
        "EchoTime": "",
        "EchoTrainLength": "",
    },
    "CT": {"KVP": ""},
}


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    from pydicom.valuerep import format_number_as_ds

    return str(format_number_as_ds(float(value)))


def encode_16bit(data: np.ndarray) -> tuple[np.ndarray, str, str]:
    """Map (I, J, K) values onto 16-bit stored pixels.

    Returns:
        ``(stored, slope, intercept)``: stored (I, J, K) uint16 or int16, and RescaleSlope/RescaleIntercept
        as DICOM decimal strings, so that ``stored * slope + intercept`` gives the values back (exactly for
        integers that fit 16 bits, within ``slope / 2`` otherwise).
    """
    lo, hi = float(data.min()), float(data.max())
    integral = data.dtype.kind in "uib" or bool(np.all(data == np.rint(data)))
    fits_signed = integral and lo >= -32768 and hi <= 32767
    if fits_signed and data.dtype.kind == "i":  # keep a signed input signed (it reads back as int16)
        return data.astype("<i2"), "1", "0"
    if integral and lo >= 0 and hi <= 65535:
        return data.astype("<u2"), "1", "0"
    if fits_signed:
        return data.astype("<i2"), "1", "0"
    if integral and hi - lo <= 65535:
        return (data.astype(np.float64) - lo).astype("<u2"), "1", _ds(lo)
    # The decimal strings are what readers see, so quantise with the parsed-back values.
    slope_text = _ds((hi - lo) / 65535.0 * (1 + 1e-9) if hi > lo else 1.0)
    intercept_text = _ds(lo)
    slope, intercept = float(slope_text), float(intercept_text)
    stored = np.clip(np.rint((data.astype(np.float64) - intercept) / slope), 0, 65535).astype("<u2")
    return stored, slope_text, intercept_text


def _source_dataset(volume: Volume) -> Any | None:
    from pydicom import Dataset

    headers = volume.meta.get("dicom_headers")
    if not headers:
        return None
    return Dataset.from_json(headers, bulk_data_uri_handler=lambda *_args: b"")


def _series_dataset(volume: Volume, source: Any | None, new_uid: Any, date: str, time: str) -> Any:
    """Attributes shared by every slice of the new series."""
    from pydicom import Dataset

    ds = Dataset()
    modality = (
        str(source.get("Modality", "") if source is not None else "") or volume.meta.get("modality") or "OT"
    )
    sop_class = _SOP_CLASS.get(modality, _SC_STORAGE)
    if source is not None:
        for keyword in _IDENTITY_TAGS + _ACQUISITION_TAGS.get(modality, ()):
            if keyword in source:
                setattr(ds, keyword, source[keyword].value)
    else:  # synthetic identity: anonymous patient, new study
        ds.PatientName = volume.meta.get("patient_name", "Anonymous")
        ds.PatientID = volume.meta.get("patient_id", "MEDIDIFF-" + new_uid("patient")[-8:])
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = new_uid("study")
        ds.StudyDate, ds.StudyTime = date, time
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.StudyDescription = volume.meta.get("study_description", "")
    if "FrameOfReferenceUID" not in ds:
        ds.FrameOfReferenceUID = new_uid("frame-of-reference")
    for keyword, default in _ACQUISITION_DEFAULTS.get(modality, {}).items():
        if keyword not in ds:
            setattr(ds, keyword, default)
    for keyword in ("PositionReferenceIndicator", "PatientPosition", "PatientBirthDate", "PatientSex"):
        if keyword not in ds and (keyword != "PatientPosition" or sop_class != _SC_STORAGE):
            setattr(ds, keyword, "")
    description = str(volume.meta.get("series_description", "") or "").strip()
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.SeriesInstanceUID = new_uid("series")
    source_number = source.get("SeriesNumber") if source is not None else None
    ds.SeriesNumber = int(source_number) + 1000 if source_number not in (None, "") else 1001
    ds.SeriesDescription = (description[:55] + " medidiff").strip()
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = f"written by medidiff {__version__}"
    ds.Manufacturer = "medidiff"
    ds.SoftwareVersions = __version__
    ds.ContentDate, ds.ContentTime = date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    if sop_class == _SC_STORAGE:
        ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    return ds


def write_dicom_series(volume: Volume, data: np.ndarray, directory: Path) -> None:
    """Write ``data`` (I, J, K) with ``volume``'s geometry and identity as IM00001.dcm... in ``directory``.

    Args:
        volume: gives the affine (RAS) and meta (``dicom_headers`` of the source, ``modality``,
            ``series_description``, optional ``dicom_uid_seed`` / ``dicom_datetime``).
        data: the voxels to store, (I, J, K), already in the output dtype.
        directory: an existing, empty directory.
    """
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

    seed = volume.meta.get("dicom_uid_seed")

    def new_uid(role: str) -> str:
        return str(generate_uid(entropy_srcs=[str(seed), role]) if seed else generate_uid())

    stamp = str(volume.meta.get("dicom_datetime") or datetime.datetime.now().strftime("%Y%m%d%H%M%S"))
    date, time = stamp[:8], stamp[8:14]
    source = _source_dataset(volume)
    shared = _series_dataset(volume, source, new_uid, date, time)
    stored, slope, intercept = encode_16bit(data)
    orientation, pixel_spacing = dicom_plane_geometry(volume.affine)
    n_slices = data.shape[2]
    positions = slice_positions(volume.affine, n_slices)
    normal = np.cross(orientation[:3], orientation[3:])
    slice_spacing = float(np.linalg.norm(volume.affine[:3, 2]))
    low, high = np.percentile(data, [0.5, 99.5])
    for k in range(n_slices):
        ds = Dataset()
        ds.update(shared)
        sop_uid = new_uid(f"instance-{k}")
        ds.SOPInstanceUID = UID(sop_uid)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
        ds.SliceThickness = _ds(slice_spacing)
        ds.SpacingBetweenSlices = _ds(slice_spacing)
        ds.SliceLocation = _ds(float(np.dot(positions[k], normal)))
        ds.Rows, ds.Columns = int(data.shape[1]), int(data.shape[0])
        ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        if ds.Modality == "CT":
            ds.RescaleType = "HU"
        ds.WindowCenter = _ds((low + high) / 2)
        ds.WindowWidth = _ds(max(high - low, 1.0))
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.save_as(directory / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
