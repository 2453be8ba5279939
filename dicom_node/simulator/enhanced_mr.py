"""Enhanced MR Image Storage (multi-frame) for the simulated scanner's DWI series.

Builds the functional groups a reader needs (PS3.3 A.36.2, C.7.6.16, C.8.13):
Pixel Measures, Plane Orientation and Pixel Value Transformation shared by all
frames; Frame Content (stack id, in-stack position, dimension index values),
Plane Position and MR Diffusion per frame; a dimension organisation of
(StackID, InStackPositionNumber, DiffusionBValue).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedMRImageStorage

__all__ = ["EnhancedFrame", "write_enhanced_mr"]

_STACK_ID = 0x00209056
_IN_STACK_POSITION = 0x00209057
_FRAME_CONTENT_SEQUENCE = 0x00209111
_DIFFUSION_B_VALUE = 0x00189087
_MR_DIFFUSION_SEQUENCE = 0x00189117


@dataclass(frozen=True, slots=True)
class EnhancedFrame:
    """One frame of an Enhanced MR DWI image.

    Parameters
    ----------
    pixels
        Stored values, uint16 ``[rows, columns]``.
    position
        ImagePositionPatient as Decimal Strings.
    b_value
        In s/mm2.
    b_index
        1-based index of the b-value (the third dimension index).
    stack_id
        The station, as a StackID string.
    in_stack_position
        1-based position of the frame within its stack.
    """

    pixels: NDArray[np.uint16]
    position: Sequence[str]
    b_value: float
    b_index: int
    stack_id: str
    in_stack_position: int


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def write_enhanced_mr(
    ds: Dataset,
    frames: Sequence[EnhancedFrame],
    *,
    orientation: Sequence[str],
    pixel_spacing: Sequence[str],
    slice_thickness: str,
    rescale_slope: str,
    dimension_organization_uid: str,
) -> None:
    """Complete ``ds`` (which carries the patient/study/series header) as an Enhanced MR image.

    Parameters
    ----------
    ds
        Header with patient, study, series, equipment and frame of reference;
        SOPInstanceUID and InstanceNumber set by the caller.
    frames
        The frames in file order.
    orientation, pixel_spacing, slice_thickness
        Shared geometry (Decimal Strings).
    rescale_slope
        Shared slope of the Pixel Value Transformation (intercept 0).
    dimension_organization_uid
        UID of the dimension organisation.
    """
    if not frames:
        raise ValueError("an Enhanced MR image needs at least one frame")
    rows, columns = frames[0].pixels.shape
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "DIFFUSION"
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = ds.get("MagneticFieldStrength", "1.5")
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = len(frames)
    ds.LossyImageCompression = "00"

    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionDuration = 120.0
    # MR Pulse Sequence module (PS3.3 C.8.13.4), required for ORIGINAL images.
    ds.PulseSequenceName = "EPI_DWI_STIR"
    ds.EchoPulseSequence = "SPIN"
    ds.MultipleSpinEcho = "NO"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "YES"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.NumberOfKSpaceTrajectories = 1
    ds.MRAcquisitionType = "2D"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.AcquisitionContextSequence = DicomSequence([])
    acquisition_datetime = str(ds.get("AcquisitionDateTime", "")) or "20260101000000"
    ds.DimensionOrganizationSequence = DicomSequence(
        [_item(DimensionOrganizationUID=dimension_organization_uid)]
    )
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = DicomSequence(
        [
            _item(
                DimensionOrganizationUID=dimension_organization_uid,
                DimensionIndexPointer=pointer,
                FunctionalGroupPointer=group,
                DimensionDescriptionLabel=label,
            )
            for pointer, group, label in (
                (_STACK_ID, _FRAME_CONTENT_SEQUENCE, "Stack ID"),
                (_IN_STACK_POSITION, _FRAME_CONTENT_SEQUENCE, "In-Stack Position"),
                (_DIFFUSION_B_VALUE, _MR_DIFFUSION_SEQUENCE, "b-value"),
            )
        ]
    )
    shared = _item(
        PixelMeasuresSequence=DicomSequence(
            [
                _item(
                    PixelSpacing=list(pixel_spacing),
                    SliceThickness=slice_thickness,
                    SpacingBetweenSlices=slice_thickness,
                )
            ]
        ),
        PlaneOrientationSequence=DicomSequence([_item(ImageOrientationPatient=list(orientation))]),
        PixelValueTransformationSequence=DicomSequence(
            [_item(RescaleIntercept="0", RescaleSlope=rescale_slope, RescaleType="US")]
        ),
        FrameAnatomySequence=DicomSequence(
            [
                _item(
                    AnatomicRegionSequence=DicomSequence(
                        [
                            _item(
                                CodeValue="38266002",
                                CodingSchemeDesignator="SCT",
                                CodeMeaning="Entire body",
                            )
                        ]
                    ),
                    FrameLaterality="U",
                )
            ]
        ),
        MRTimingAndRelatedParametersSequence=DicomSequence(
            [
                _item(
                    RepetitionTime=6800.0,
                    FlipAngle=90.0,
                    EchoTrainLength=1,
                    RFEchoTrainLength=1,
                    GradientEchoTrainLength=1,
                    GradientOutputType="DB_DT",
                    GradientOutput=20.0,
                    OperatingModeSequence=DicomSequence(
                        [
                            _item(OperatingModeType=kind, OperatingMode="IEC_NORMAL")
                            for kind in ("STATIC FIELD", "RF", "GRADIENT")
                        ]
                    ),
                    SpecificAbsorptionRateSequence=DicomSequence(
                        [
                            _item(
                                SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                SpecificAbsorptionRateValue=0.8,
                            )
                        ]
                    ),
                )
            ]
        ),
        MREchoSequence=DicomSequence([_item(EffectiveEchoTime=68.0)]),
        MRFOVGeometrySequence=DicomSequence(
            [
                _item(
                    InPlanePhaseEncodingDirection="COLUMN",
                    MRAcquisitionFrequencyEncodingSteps=columns,
                    MRAcquisitionPhaseEncodingStepsInPlane=rows,
                    PercentSampling=100.0,
                    PercentPhaseFieldOfView=100.0,
                )
            ]
        ),
        MRModifierSequence=DicomSequence(
            [
                _item(
                    InversionRecovery="YES",
                    InversionTimes=[180.0],
                    FlowCompensation="NONE",
                    T2Preparation="NO",
                    SpectrallySelectedExcitation="NONE",
                    SpatialPresaturation="NONE",
                    PartialFourier="NO",
                    ParallelAcquisition="YES",
                    ParallelAcquisitionTechnique="SENSE",
                    ParallelReductionFactorInPlane=2.0,
                    ParallelReductionFactorOutOfPlane=1.0,
                    ParallelReductionFactorSecondInPlane=1.0,
                )
            ]
        ),
        MRImagingModifierSequence=DicomSequence(
            [
                _item(
                    MagnetizationTransfer="NONE",
                    BloodSignalNulling="NO",
                    Tagging="NONE",
                    TransmitterFrequency=63.68,
                    PixelBandwidth=2000.0,
                )
            ]
        ),
        MRReceiveCoilSequence=DicomSequence(
            [
                _item(
                    ReceiveCoilName="BODY ARRAY",
                    ReceiveCoilManufacturerName="",
                    ReceiveCoilType="MULTICOIL",
                    QuadratureReceiveCoil="NO",
                    MultiCoilDefinitionSequence=DicomSequence(
                        [_item(MultiCoilElementName="ALL", MultiCoilElementUsed="YES")]
                    ),
                )
            ]
        ),
        MRTransmitCoilSequence=DicomSequence(
            [
                _item(
                    TransmitCoilName="BODY",
                    TransmitCoilManufacturerName="",
                    TransmitCoilType="BODY",
                )
            ]
        ),
        MRAveragesSequence=DicomSequence([_item(NumberOfAverages=4.0)]),
        MRImageFrameTypeSequence=DicomSequence(
            [
                _item(
                    FrameType=["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"],
                    PixelPresentation="MONOCHROME",
                    VolumetricProperties="VOLUME",
                    VolumeBasedCalculationTechnique="NONE",
                    ComplexImageComponent="MAGNITUDE",
                    AcquisitionContrast="DIFFUSION",
                )
            ]
        ),
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for frame in frames:
        diffusion = _item(
            DiffusionBValue=float(frame.b_value),
            DiffusionDirectionality="ISOTROPIC" if frame.b_value > 0 else "NONE",
        )
        per_frame.append(
            _item(
                FrameContentSequence=DicomSequence(
                    [
                        _item(
                            FrameAcquisitionDateTime=acquisition_datetime,
                            FrameReferenceDateTime=acquisition_datetime,
                            FrameAcquisitionDuration=6800.0,
                            StackID=frame.stack_id,
                            InStackPositionNumber=frame.in_stack_position,
                            DimensionIndexValues=[
                                int(frame.stack_id),
                                frame.in_stack_position,
                                frame.b_index,
                            ],
                        )
                    ]
                ),
                PlanePositionSequence=DicomSequence(
                    [_item(ImagePositionPatient=list(frame.position))]
                ),
                MRDiffusionSequence=DicomSequence([diffusion]),
            )
        )
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    stacked = np.stack([frame.pixels for frame in frames]).astype("<u2", copy=False)
    ds.PixelData = stacked.tobytes()
