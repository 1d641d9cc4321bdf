"""Coded concepts of the DICOM outputs (SR TID 1500, SEG).

Standard codes (DCM, SCT, UCUM) are used wherever one exists
(``conventions.md`` "PACS"). The concepts below have no standard code; they
use the private coding scheme ``99LIVERBURDEN`` (the ``99`` prefix marks a
private scheme, DICOM PS3.16 section 8.2), declared in each SR's Coding Scheme
Identification Sequence.

Private codes (scheme designator ``99LIVERBURDEN``)
---------------------------------------------------

==========  ===============================================  ======  ====================================================
Code value  Code meaning                                     Unit    Used for
==========  ===============================================  ======  ====================================================
LB0001      Sum of diameters, all lesions                    mm      study group: sum of LD of every lesion (Du et al.)
LB0002      Sum of diameters, RECIST 1.1 target lesions      mm      study group: sum of LD of the RECIST targets
LB0003      Hepatic tumor involvement                        %       study group: hepatic tumor volume / TLV x 100
LB0004      Future liver remnant volume                      mL      FLR group (when a resection is planned)
LB0005      Future liver remnant fraction                    %       FLR group: FLR / functional liver volume x 100
LB0006      Standardized future liver remnant (Vauthey)      %       FLR group: FLR / standardized TLV x 100
LB0007      Future liver remnant adequate                    (code)  FLR group: qualitative, value Yes/No (SCT)
LB0010      Ablation margin classification                   (code)  per tumor: qualitative, value LB0011..LB0014
LB0011      A0: margin at least threshold all around                 value of LB0010
LB0012      A1: margin 0 mm up to threshold somewhere                value of LB0010
LB0013      A2: tumor not covered by the ablation zone               value of LB0010
LB0014      Not assessed (registration failed quality)               value of LB0010
LB0015      Minimum ablative margin                          mm      per tumor: 3-D minimal signed margin
LB0016      Tumor coverage by ablation zone                  %       per tumor: tumor volume inside the zone x 100
LB0017      Ablation margin threshold                        mm      per tumor: the A0 threshold that was applied
LB0020      Hepatic tumor burden                             (code)  tracking identifier meaning: the study group
==========  ===============================================  ======  ====================================================

Standard codes used
-------------------

Volume SCT 118565006 (mL), Long axis SCT 103339001 (mm), Short axis SCT
103340004 (mm), Diameter SCT 81827009 with derivation Maximum SCT 56851009
(the maximal 3-D diameter, mm), Liver SCT 10200004, Neoplasm SCT 108369006,
Morphologically abnormal structure SCT 49755003, Sum of segmented voxel
method for volume DCM 126030; units UCUM ``mL``, ``mm``, ``%``.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

__all__ = [
    "A0",
    "A1",
    "A2",
    "CLASSIFICATION",
    "COVERAGE_PCT",
    "FLR_ADEQUATE",
    "FLR_ML",
    "FLR_PCT",
    "INVOLVEMENT_PCT",
    "MARGIN_THRESHOLD_MM",
    "MIN_MARGIN_MM",
    "NOT_ASSESSED",
    "SCHEME",
    "SCHEME_NAME",
    "SFLR_PCT",
    "SOD_ALL_MM",
    "SOD_RECIST_MM",
    "TUMOR_BURDEN",
    "UNIT_MM",
    "UNIT_ML",
    "UNIT_PCT",
    "private_codes",
]

#: Coding scheme designator of the private codes.
SCHEME = "99LIVERBURDEN"
#: Its name, as written in the Coding Scheme Identification Sequence.
SCHEME_NAME = "liverburden private codes"


def _p(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)


SOD_ALL_MM = _p("LB0001", "Sum of diameters, all lesions")
SOD_RECIST_MM = _p("LB0002", "Sum of diameters, RECIST 1.1 target lesions")
INVOLVEMENT_PCT = _p("LB0003", "Hepatic tumor involvement")
FLR_ML = _p("LB0004", "Future liver remnant volume")
FLR_PCT = _p("LB0005", "Future liver remnant fraction")
SFLR_PCT = _p("LB0006", "Standardized future liver remnant (Vauthey)")
FLR_ADEQUATE = _p("LB0007", "Future liver remnant adequate")
CLASSIFICATION = _p("LB0010", "Ablation margin classification")
A0 = _p("LB0011", "A0: margin at least threshold all around")
A1 = _p("LB0012", "A1: margin 0 mm up to threshold somewhere")
A2 = _p("LB0013", "A2: tumor not covered by the ablation zone")
NOT_ASSESSED = _p("LB0014", "Not assessed (registration failed quality)")
MIN_MARGIN_MM = _p("LB0015", "Minimum ablative margin")
COVERAGE_PCT = _p("LB0016", "Tumor coverage by ablation zone")
MARGIN_THRESHOLD_MM = _p("LB0017", "Ablation margin threshold")
TUMOR_BURDEN = _p("LB0020", "Hepatic tumor burden")

UNIT_MM = CodedConcept(value="mm", scheme_designator="UCUM", meaning="millimeter")
UNIT_ML = CodedConcept(value="mL", scheme_designator="UCUM", meaning="milliliter")
UNIT_PCT = CodedConcept(value="%", scheme_designator="UCUM", meaning="percent")

#: Standard concepts, for the SR builder.
VOLUME = codes.SCT.Volume
LONG_AXIS = codes.SCT.LongAxis
SHORT_AXIS = codes.SCT.ShortAxis
DIAMETER = codes.SCT.Diameter
MAXIMUM = codes.SCT.Maximum
LIVER = codes.SCT.Liver
NEOPLASM = codes.SCT.Neoplasm
ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure
VOXEL_SUM = codes.DCM.SumOfSegmentedVoxelMethodForVolume


def private_codes() -> list[CodedConcept]:
    """Every private code, in code-value order (the README table)."""
    out = [v for v in globals().values() if isinstance(v, CodedConcept) and v.scheme_designator == SCHEME]
    return sorted(out, key=lambda c: c.value)
