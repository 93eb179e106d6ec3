"""Pedestrian attribute recognition: PA100k, PETA and RAP (v1) as they ship, and RethinkPAR's
zero-shot PETA_zs / RAP_zs pickles.

PA100k (Liu et al., ICCV 2017)::

    PA100k/annotation.mat   attributes (26x1 cell), {train,val,test}_images_name (Nx1 cell),
                            {train,val,test}_label (Nx26)
    PA100k/data/000001.jpg ...

PETA (Deng et al., ACM MM 2014), in the ``PETA.mat`` form RethinkPAR's ``format_peta.py``
reads::

    PETA/PETA.mat   struct peta: data (N x (4+105); columns 4: are the labels),
                    attribute (105x1 cell), selected_attribute (the 35 evaluated, 1-based),
                    partion_attribute (5x1 cell of structs with train/val/test, 1-based)
    PETA/images/00001.png ...   (row i is image ``f"{i + 1:05d}.png"``)

RAP v1 (Li et al., 2016), as ``format_rap.py`` reads it::

    RAP/RAP_annotation/RAP_annotation.mat   struct RAP_annotation: partion (5x1 cell of
        structs with train_index/test_index, 1-based), label (N x 92), attribute_chinese,
        attribute_eng (92x1 cell), position, imagesname (Nx1 cell), attribute_exp
    RAP/RAP_dataset/<imagesname>

RethinkPAR zero-shot splits (Jia et al., "Rethinking of Pedestrian Attribute Recognition",
2021): ``dataset_zs_run0.pkl`` in the dataset folder, a pickled EasyDict with
``image_name``, ``label`` (N x A), ``attr_name``, ``label_idx.eval`` (the evaluated columns;
absent means all), ``partition.{train,val,test,trainval}`` (0-based; an array, or a list of
arrays, one per run, of which RethinkPAR uses the first) and ``weight_train`` /
``weight_trainval``.  PETA_zs keeps PETA's 105 columns and evaluates 35.  RAP_zs comes
from RAPv2 (RethinkPAR keeps it under ``data/RAP2``; our catalogue's ``rap_zs`` root is
the folder holding it and ``RAP_dataset/``): 119 columns (the 54 selected attributes in
RethinkPAR's group order, 42 colours, 23 others) of which 53 are evaluated (all selected
but Age46-60).  Pickles load only through :func:`bench.data.base.safe_load_pickle`;
their ``root`` entry (a path on the authors' machine) is ignored: images are looked up
in the dataset folder.

Every reader returns one :class:`AttrDataset`.  Labels are 0/1; RAP's annotation (and
RethinkPAR's pickles made from it) may also hold 2 for "uncertain", which RethinkPAR's
loader turns into 0: so do the RAP and zero-shot readers; any other value is an error.
``eval_attr_idx`` keeps the file's order of the evaluated attributes (RethinkPAR
reorders them into attribute groups for printing; the metrics do not depend on it).
Splits are 0-based index arrays into ``images``; ``trainval`` and ``test`` are always
there, ``train`` / ``val`` where the dataset defines them (RAP v1 ships only
trainval/test).  ``splits`` is the first shipped partition (as RethinkPAR uses),
``partitions`` all of them.

Synthetic labels
----------------
The synthetic writer labels each crop from its rendered identity and view
(:mod:`bench.data.synth.people`).  PA100k uses ``Identity.attributes(view)`` as it is.
For PETA and RAP, an attribute with a visible synthetic counterpart is mapped; every other
attribute is 0 everywhere.  Such an attribute has no positives: RethinkPAR's mA counts its
positive recall as 0 (0 / (0 + eps)), so it caps synthetic mA at 0.5 for that attribute;
compare synthetic numbers between backbones, never with the papers.  Colour names map one
to one, with navy as Blue and blond hair as Yellow; a colour with no column in a
vocabulary is dropped.

Each line: synthetic fact -> PETA (105) | RAP v1 (92) | RAPv2 / RAP_zs (119); "-" is no column.

- female / male -> personalFemale / personalMale | Female / - | Femal / -
- age less18 / 18-30 / 31-45 -> personalLess15 / personalLess30 / personalLess45 |
  AgeLess16 / Age17-30 / Age31-45 | same as RAP v1
- age 46-60 / over 60 -> personalLess60 / personalLarger60 | - / - | Age46-60 / AgeBiger60
- build < 0.95 / > 1.1 / else -> - | BodyThin / BodyFat / BodyNormal | same as RAP v1
- shop clerk's apron / none -> - | Clerk / Customer | Employee / Customer
- bald -> hairBald | hs-BaldHead | hs-BaldHead
- long / short hair (not bald) -> hairLong / hairShort | hs-LongHair / - | hs-LongHair / -
- hair colour (not bald) -> hair<Colour> | hs-BlackHair (black only) | same as RAP v1
- hat -> accessoryHat | hs-Hat | hs-Hat
- eyewear (drawn with dark lenses) -> accessorySunglasses | hs-Glasses | hs-Glasses
- scarf -> accessoryMuffler | hs-Muffler | hs-Muffler
- none of hat, eyewear, scarf -> accessoryNothing | - | -
- T-shirt / V-neck T-shirt -> upperBodyShortSleeve + upperBodyTshirt / upperBodyVNeck |
  ub-ShortSleeve + ub-TShirt (both) | same as RAP v1
- shirt / tight top -> upperBodyLongSleeve + upperBodyOther | ub-Shirt / ub-Tight | same
- sweater -> upperBodyLongSleeve + upperBodySweater | ub-Sweater | ub-Sweater
- zipped jacket / padded cotton jacket -> upperBodyLongSleeve + upperBodyJacket |
  ub-Jacket / ub-Cotton | same as RAP v1
- suit -> upperBodyLongSleeve + upperBodySuit + upperBodyFormal + lowerBodyFormal (every
  other top: upperBodyCasual + lowerBodyCasual) | ub-SuitUp | ub-SuitUp
- sleeveless vest -> upperBodyNoSleeve | ub-Vest | ub-Vest
- long coat -> upperBodyLongSleeve + upperBodyJacket | ub-Jacket | ub-Others
- upper stripes / plaid / logo -> upperBodyThinStripes / upperBodyPlaid / upperBodyLogo |
  up-Mixture (stripes, plaid) | ub-ColorMixture (stripes, plaid)
- upper splice -> - | up-Mixture | ub-ColorMixture
- upper colour, plus the second colour of stripes, plaid and splice -> upperBody<Colour> |
  up-<Colour> | ub-Color<Colour> (red is RAPv2's "up-ColorRed")
- trousers / tight trousers / jeans -> lowerBodyTrousers (both) / lowerBodyJeans |
  lb-LongTrousers / lb-TightTrousers / lb-Jeans | same as RAP v1
- shorts -> lowerBodyShorts | - | lb-Shorts
- short skirt / dress (both end above the knee) / skirt (below it) ->
  lowerBodyShortSkirt (both) / lowerBodyLongSkirt | lb-ShortSkirt / lb-Dress / lb-Skirt |
  same as RAP v1
- lower stripes / pattern -> lowerBodyThinStripes / - | low-Mixture | lb-ColorMixture
- lower colour -> lowerBody<Colour> | low-<Colour> (7 colours) | lb-Color<Colour>
- casual / cloth shoes -> footwearShoes (both) | shoes-Casual / shoes-Cloth | same
- sneakers / leather shoes / boots -> footwearSneaker / footwearLeatherShoes / footwearBoots |
  shoes-Sport / shoes-Leather / shoes-Boots | shoes-Sports / shoes-Leather / shoes-Boots
- sandals -> footwearSandals | shoes-Casual | shoes-Sandals
- shoe colour -> footwear<Colour> | shoes-<Colour> (8 colours) | shoes-Color<Colour>
- backpack -> carryingBackpack | attach-Backpack | attachment-Backpack
- shoulder bag -> carryingMessengerBag | attach-SingleShoulderBag | attachment-ShoulderBag
- handbag -> carryingOther | attach-HandBag | attachment-HandBag
- a box held in front -> carryingOther | attach-Box + action-Holding | attachment-Box +
  action-Holding
- plastic bag / paper bag in the hand -> carryingPlasticBags / carryingOther |
  attach-PlasticBag / attach-PaperBag | attachment-PlasticBag / attachment-PaperBag
- handbag, plastic or paper bag -> - | action-CarrybyHand | action-CarryingByHand
- suitcase pulled behind -> carryingLuggageCase | attach-HandTrunk + action-Pulling |
  attachment-HandTrunk + action-Pulling
- closed umbrella -> carryingUmbrella | attach-Other | attachment-Other
- carries nothing -> carryingNothing | - | -
- phone held to the ear -> - | action-Calling | action-Calling
- view front / back -> - | faceFront / faceBack | faceFront / faceBack
- view side, facing image right / left -> - | faceRight / faceLeft | faceRight / faceLeft

Every PETA attribute RethinkPAR evaluates is drawn.  Unmapped (always 0): PETA's capri,
hot pants, lower plaid, stocking, headphones, hair band, kerchief, folders, buggies,
suitcases (as distinct from luggage cases); RAP's talking, gathering, pushing, carrying by
the arm, other actions and other shoes (of RAP_zs's 53 evaluated attributes these six are
0 everywhere), occlusions, and the Mixture/Silver/Other colours of shoes.  RAPv2's
152-column file is not written (only its zero-shot pickle): the nine columns after ``action-Other`` are named here
as view and occlusion attributes, our best reading of RAPv2; the readers take names from
the files, so real data never depends on this table.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from bench.data.base import (DataError, Problems, encode_image, image_ok, load_mat,
                             problems_or_strict, require_dir, safe_load_pickle)
from bench.data.synth.people import LONG_SLEEVED, SHORT_SLEEVED
from bench.io import atomic_write_bytes

# --------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------
_PETA_COLOURS = ("Black", "Blue", "Brown", "Green", "Grey", "Orange", "Pink", "Purple", "Red",
                 "White", "Yellow")
PETA_ATTRIBUTES: tuple[str, ...] = (
    "personalLess30", "personalLess45", "personalLess60", "personalLarger60",
    "carryingBackpack", "carryingOther", "lowerBodyCasual", "upperBodyCasual",
    "lowerBodyFormal", "upperBodyFormal", "accessoryHat", "upperBodyJacket", "lowerBodyJeans",
    "footwearLeatherShoes", "upperBodyLogo", "hairLong", "personalMale", "carryingMessengerBag",
    "accessoryMuffler", "accessoryNothing", "carryingNothing", "upperBodyPlaid",
    "carryingPlasticBags", "footwearSandals", "footwearShoes", "lowerBodyShorts",
    "upperBodyShortSleeve", "lowerBodyShortSkirt", "footwearSneaker", "upperBodyThinStripes",
    "accessorySunglasses", "lowerBodyTrousers", "upperBodyTshirt", "upperBodyOther",
    "upperBodyVNeck",
    *(f"{part}{c}" for part in ("upperBody", "lowerBody", "hair", "footwear")
      for c in _PETA_COLOURS),
    "accessoryHeadphone", "personalLess15", "carryingBabyBuggy", "hairBald", "footwearBoots",
    "lowerBodyCapri", "carryingShoppingTro", "carryingUmbrella", "personalFemale",
    "carryingFolder", "accessoryHairBand", "lowerBodyHotPants", "accessoryKerchief",
    "lowerBodyLongSkirt", "upperBodyLongSleeve", "lowerBodyPlaid", "lowerBodyThinStripes",
    "carryingLuggageCase", "upperBodyNoSleeve", "hairShort", "footwearStocking",
    "upperBodySuit", "carryingSuitcase", "lowerBodySuits", "upperBodySweater",
    "upperBodyThickStripes",
)
PETA_NUM_EVAL = 35  # the first 35 columns are the evaluated ones
# RethinkPAR's attribute-group order of PETA's 35 (what its zero-shot pickle stores as eval)
PETA_GROUP_ORDER = (10, 18, 19, 30, 15, 7, 9, 11, 14, 21, 26, 29, 32, 33, 34, 6, 8, 12, 25, 27,
                    31, 13, 23, 24, 28, 4, 5, 17, 20, 22, 0, 1, 2, 3, 16)

RAP_ATTRIBUTES: tuple[str, ...] = (
    "Female", "AgeLess16", "Age17-30", "Age31-45", "BodyFat", "BodyNormal", "BodyThin",
    "Customer", "Clerk", "hs-BaldHead", "hs-LongHair", "hs-BlackHair", "hs-Hat", "hs-Glasses",
    "hs-Muffler", "ub-Shirt", "ub-Sweater", "ub-Vest", "ub-TShirt", "ub-Cotton", "ub-Jacket",
    "ub-SuitUp", "ub-Tight", "ub-ShortSleeve", "lb-LongTrousers", "lb-Skirt", "lb-ShortSkirt",
    "lb-Dress", "lb-Jeans", "lb-TightTrousers", "shoes-Leather", "shoes-Sport", "shoes-Boots",
    "shoes-Cloth", "shoes-Casual", "attach-Backpack", "attach-SingleShoulderBag",
    "attach-HandBag", "attach-Box", "attach-PlasticBag", "attach-PaperBag", "attach-HandTrunk",
    "attach-Other", "action-Calling", "action-Talking", "action-Gathering", "action-Holding",
    "action-Pusing", "action-Pulling", "action-CarrybyArm", "action-CarrybyHand",
    "faceFront", "faceBack", "faceLeft", "faceRight", "occlusionLeft", "occlusionRight",
    "occlusionUp", "occlusionDown", "occlusion-Environment", "occlusion-Attachment",
    "occlusion-Person", "occlusion-Other",
    *(f"up-{c}" for c in ("Black", "White", "Gray", "Red", "Green", "Blue", "Yellow", "Brown",
                          "Purple", "Pink", "Orange", "Mixture")),
    *(f"low-{c}" for c in ("Black", "White", "Gray", "Red", "Green", "Blue", "Yellow",
                           "Mixture")),
    *(f"shoes-{c}" for c in ("Black", "White", "Gray", "Red", "Green", "Blue", "Yellow", "Brown",
                             "Mixture")),
)
RAP_NUM_EVAL = 51  # the first 51 columns are the evaluated ones

_RAP2_COLOURS = ("Black", "White", "Gray", "Red", "Green", "Blue", "Silver", "Yellow", "Brown",
                 "Purple", "Pink", "Orange", "Mixture", "Other")
# RAPv2's first 120 columns (of 152; the rest are part boxes).  Names after action-Other
# (111-119) are our best reading: see the module docstring.
RAP2_ATTRIBUTES: tuple[str, ...] = (
    "Femal", "AgeLess16", "Age17-30", "Age31-45", "Age46-60", "AgeBiger60", "BodyFatter",
    "BodyFat", "BodyNormal", "BodyThin", "BodyThiner", "Customer", "Employee", "hs-BaldHead",
    "hs-LongHair", "hs-BlackHair", "hs-Hat", "hs-Glasses", "hs-Sunglasses", "hs-Muffler",
    "hs-Mask", "ub-Shirt", "ub-Sweater", "ub-Vest", "ub-TShirt", "ub-Cotton", "ub-Jacket",
    "ub-SuitUp", "ub-Tight", "ub-ShortSleeve", "ub-Others",
    *(("up-ColorRed" if c == "Red" else f"ub-Color{c}") for c in _RAP2_COLOURS),
    "lb-LongTrousers", "lb-Shorts", "lb-Skirt", "lb-ShortSkirt", "lb-LongSkirt", "lb-Dress",
    "lb-Jeans", "lb-TightTrousers", *(f"lb-Color{c}" for c in _RAP2_COLOURS),
    "shoes-Leather", "shoes-Sports", "shoes-Boots", "shoes-Cloth", "shoes-Sandals",
    "shoes-Casual", "shoes-Other", *(f"shoes-Color{c}" for c in _RAP2_COLOURS),
    "attachment-Backpack", "attachment-ShoulderBag", "attachment-HandBag",
    "attachment-WaistBag", "attachment-Box", "attachment-PlasticBag", "attachment-PaperBag",
    "attachment-HandTrunk", "attachment-Baby", "attachment-Other",
    "action-Calling", "action-StrechOutArm", "action-Talking", "action-Gathering",
    "action-LyingCounter", "action-Squatting", "action-Running", "action-Holding",
    "action-Pushing", "action-Pulling", "action-CarryingByArm", "action-CarryingByHand",
    "action-Other",
    "faceFront", "faceBack", "faceLeft", "faceRight", "occlusionLeft", "occlusionRight",
    "occlusionUp", "occlusionDown", "occlusion-Environment",
)
# RAPv2's 54 selected attributes (0-based columns, in file order), and RethinkPAR's group
# order of them: head, upper, lower, shoes, attachments, age, gender, body, role, action.
RAP2_SELECTED = (0, 1, 2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, *range(21, 31), 45, 47, 48,
                 50, 51, 52, 67, 68, 69, 70, 72, 73, 88, 89, 90, 92, 93, 94, 95, 97, 98, 100,
                 101, 105, 106, 107, 108, 109, 110)
RAP2_GROUP_ORDER = (*range(10, 45), 1, 2, 3, 4, 0, 5, 6, 7, 8, 9, *range(45, 54))


def rap_zs_layout() -> tuple[list[int], list[int]]:
    """(RAPv2 columns of RAP_zs's 119 label columns, RAP_zs's 53 evaluated columns).

    As RethinkPAR builds it: the 54 selected attributes in group order, then the colours
    (upper, lower, shoes), then the first 24 remaining columns but the 16th; every
    selected attribute but Age46-60 is evaluated.
    """
    selected = [RAP2_SELECTED[i] for i in RAP2_GROUP_ORDER]
    colours = [*range(31, 45), *range(53, 67), *range(74, 88)]
    rest = [i for i in range(len(RAP2_ATTRIBUTES)) if i not in set(selected) | set(colours)]
    rest = rest[:24]
    extra = rest[:15] + rest[16:]
    age46 = selected.index(RAP2_ATTRIBUTES.index("Age46-60"))
    return selected + colours + extra, [i for i in range(len(selected)) if i != age46]


ZS_PICKLE = "dataset_zs_run0.pkl"


# --------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AttrDataset:
    """One attribute dataset: every image, its full label row, the evaluated columns, splits."""

    name: str  # catalogue key: pa100k | peta | peta_zs | rap | rap_zs
    root: str
    attr_names: tuple[str, ...]  # every label column
    eval_attr_idx: np.ndarray  # int64, the columns the protocol evaluates
    images: list[str]  # absolute paths
    labels: np.ndarray  # uint8 (N, len(attr_names)), 0/1
    splits: dict[str, np.ndarray]  # 0-based indices into images; trainval and test always
    partitions: tuple[dict[str, np.ndarray], ...] = field(default=())  # every shipped one
    pids: np.ndarray | None = None  # person identities, where the format has them

    @property
    def eval_attr_names(self) -> tuple[str, ...]:
        return tuple(self.attr_names[i] for i in self.eval_attr_idx)

    def subset(self, split: str) -> tuple[list[str], np.ndarray]:
        """(image paths, labels of the evaluated attributes) of one split."""
        idx = self.splits[split]
        return [self.images[i] for i in idx], self.labels[np.ix_(idx, self.eval_attr_idx)]


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------
PA100K_SPLITS = ("train", "val", "test")


def read_pa100k(root: str | Path, problems: Problems | None = None) -> AttrDataset:
    """Read a PA100k root (the folder holding annotation.mat and data/)."""
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    ann = root / "annotation.mat"
    mat = load_mat(ann, probs)
    fields = ["attributes"] + [f"{s}_{k}" for s in PA100K_SPLITS for k in ("images_name", "label")]
    _require_keys(mat, fields, ann, probs, "field")
    attrs = _cellstr(mat["attributes"], ann, "attributes", probs)
    names, labels, splits, start = [], [], {}, 0
    for s in PA100K_SPLITS:
        part_names = _cellstr(mat[f"{s}_images_name"], ann, f"{s}_images_name", probs)
        lab = _label_matrix(mat[f"{s}_label"], len(part_names), len(attrs), ann, probs,
                            what=f"{s}_label")
        names += part_names
        labels.append(lab if lab is not None else np.zeros((len(part_names), len(attrs)), np.uint8))
        splits[s] = np.arange(start, start + len(part_names), dtype=np.int64)
        start += len(part_names)
        if not part_names:
            probs.add(ann, f"split {s!r} is empty ({s}_images_name names no image)")
    splits["trainval"] = np.concatenate([splits["train"], splits["val"]])
    img_dir = root / "data"
    require_dir(img_dir, probs, "data/ folder")
    images = _check_images(img_dir, names, probs, f"named in {ann.name}")
    return AttrDataset("pa100k", str(root), tuple(attrs), np.arange(len(attrs), dtype=np.int64),
                       images, np.concatenate(labels), splits, (splits,))


def read_peta(root: str | Path, problems: Problems | None = None) -> AttrDataset:
    """Read a PETA root (PETA.mat and images/), with PETA's five random partitions."""
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    ann = root / "PETA.mat"
    peta = _struct(load_mat(ann, probs), "peta", ann, probs)
    _require_keys(peta, ["data", "attribute", "partion_attribute"], ann, probs, "field", "peta.")
    attrs = _cellstr(peta["attribute"], ann, "peta.attribute", probs)
    data = np.asarray(peta["data"])
    if data.ndim != 2 or data.dtype.kind not in "biuf":
        raise probs.fatal(ann, f"peta.data must be a numeric matrix, found {data.dtype} "
                               f"of shape {data.shape}")
    n = data.shape[0]
    if data.shape[1] - 4 != len(attrs):
        probs.add(ann, f"label matrix has {data.shape[1] - 4} attribute columns, expected "
                       f"{len(attrs)} (peta.data has 4 leading columns, then one per attribute)")
        width = min(data.shape[1] - 4, len(attrs))
        data = data[:, :4 + max(width, 0)]
        attrs = attrs[:max(width, 0)]
    labels = _label_values(data[:, 4:], ann, "peta.data", probs, uncertain=False)
    if "selected_attribute" in peta.dtype.names:
        sel = _indices(peta["selected_attribute"], len(attrs), 1, ann,
                       "peta.selected_attribute", probs)
        eval_idx = sel if sel is not None else _first(PETA_NUM_EVAL, len(attrs))
    else:
        eval_idx = _first(PETA_NUM_EVAL, len(attrs))
    partitions = _mat_partitions(peta["partion_attribute"], ("train", "val", "test"), n, ann,
                                 "peta.partion_attribute", probs)
    img_dir = root / "images"
    require_dir(img_dir, probs, "images/ folder")
    images = _check_images(img_dir, [f"{i + 1:05d}.png" for i in range(n)], probs,
                           f"row of {ann.name}")
    return AttrDataset("peta", str(root), tuple(attrs), eval_idx, images, labels,
                       partitions[0], partitions)


def read_rap(root: str | Path, problems: Problems | None = None) -> AttrDataset:
    """Read a RAP v1 root (RAP_annotation/RAP_annotation.mat and RAP_dataset/)."""
    root = Path(root)
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    ann = root / "RAP_annotation" / "RAP_annotation.mat"
    rap = _struct(load_mat(ann, probs), "RAP_annotation", ann, probs)
    _require_keys(rap, ["imagesname", "label", "attribute_eng", "partion"], ann, probs, "field",
                  "RAP_annotation.")
    attrs = _cellstr(rap["attribute_eng"], ann, "RAP_annotation.attribute_eng", probs)
    names = _cellstr(rap["imagesname"], ann, "RAP_annotation.imagesname", probs)
    labels = _label_matrix(rap["label"], len(names), len(attrs), ann, probs,
                           what="RAP_annotation.label", uncertain=True)
    if labels is None:
        labels = np.zeros((len(names), len(attrs)), np.uint8)
    if "selected_attribute" in rap.dtype.names:  # RAPv2 has it; v1's evaluated are the first 51
        sel = _indices(rap["selected_attribute"], len(attrs), 1, ann,
                       "RAP_annotation.selected_attribute", probs)
        eval_idx = sel if sel is not None else _first(RAP_NUM_EVAL, len(attrs))
    else:
        eval_idx = _first(RAP_NUM_EVAL, len(attrs))
    partitions = _mat_partitions(rap["partion"], ("train_index", "test_index"), len(names), ann,
                                 "RAP_annotation.partion", probs)
    img_dir = root / "RAP_dataset"
    require_dir(img_dir, probs, "RAP_dataset/ folder")
    images = _check_images(img_dir, names, probs, f"named in {ann.name}")
    return AttrDataset("rap", str(root), tuple(attrs), eval_idx, images, labels,
                       partitions[0], partitions)


def read_peta_zs(root: str | Path, problems: Problems | None = None) -> AttrDataset:
    """Read PETA_zs: RethinkPAR's dataset_zs_run0.pkl in a PETA root, images under images/."""
    return _read_rethinkpar_pickle("peta_zs", Path(root), "images", problems)


def read_rap_zs(root: str | Path, problems: Problems | None = None) -> AttrDataset:
    """Read RAP_zs: RethinkPAR's dataset_zs_run0.pkl (from RAPv2) beside RAP_dataset/."""
    return _read_rethinkpar_pickle("rap_zs", Path(root), "RAP_dataset", problems)


def _read_rethinkpar_pickle(key: str, root: Path, image_dir: str,
                            problems: Problems | None) -> AttrDataset:
    probs = problems_or_strict(problems)
    require_dir(root, probs, "dataset root")
    path = root / ZS_PICKLE
    if not path.is_file():
        raise probs.fatal(path, "missing pickle file (RethinkPAR's zero-shot split)")
    try:
        info = safe_load_pickle(path)
    except DataError as e:
        raise probs.fatal(path, str(e).removeprefix(f"{path}: ")) from None
    if not isinstance(info, dict):
        raise probs.fatal(path, f"expected an EasyDict at the top, found {type(info).__name__}")
    _require_keys(info, ["image_name", "label", "attr_name", "partition"], path, probs, "key")
    names = _strings(info["image_name"], path, "image_name", probs)
    attrs = _strings(info["attr_name"], path, "attr_name", probs)
    labels = _label_matrix(info["label"], len(names), len(attrs), path, probs, what="label",
                           uncertain=True)
    if labels is None:
        labels = np.zeros((len(names), len(attrs)), np.uint8)
    eval_idx = np.arange(len(attrs), dtype=np.int64)  # no label_idx: every column is evaluated
    label_idx = info.get("label_idx")
    if label_idx is not None:
        if not isinstance(label_idx, dict) or "eval" not in label_idx:
            probs.add(path, "label_idx must be an EasyDict with an 'eval' list")
        else:
            sel = _indices(label_idx["eval"], len(attrs), 0, path, "label_idx.eval", probs)
            eval_idx = sel if sel is not None else eval_idx
    partitions = _pickle_partitions(info["partition"], len(names), path, probs)
    img_dir = root / image_dir
    require_dir(img_dir, probs, f"{image_dir}/ folder")
    images = _check_images(img_dir, names, probs, f"named in {path.name}")
    return AttrDataset(key, str(root), tuple(attrs), eval_idx, images, labels, partitions[0],
                       partitions)


# --------------------------------------------------------------------------------------
# Reader helpers: every error names the file and the field
# --------------------------------------------------------------------------------------
def _require_keys(container: Any, keys: Iterable[str], path: Path, probs: Problems,
                  kind: str, prefix: str = "") -> None:
    have = set(container.dtype.names or ()) if isinstance(container, np.void) else set(container)
    missing = [k for k in keys if k not in have]
    for k in missing[:-1]:
        probs.add(path, f"missing {kind} '{prefix}{k}'")
    if missing:
        raise probs.fatal(path, f"missing {kind} '{prefix}{missing[-1]}'")


def _first(k: int, n: int) -> np.ndarray:
    return np.arange(min(k, n), dtype=np.int64)


def _struct(mat: dict, name: str, path: Path, probs: Problems) -> np.void:
    """The 1x1 MATLAB struct ``name`` of a loaded .mat file, as a numpy record."""
    if name not in mat:
        raise probs.fatal(path, f"missing field {name!r} (the struct holding the annotation)")
    s = np.asarray(mat[name])
    if s.dtype.names is None or s.size != 1:
        raise probs.fatal(path, f"{name!r} must be a 1x1 struct, found {s.dtype} "
                                f"of shape {s.shape}")
    return s.reshape(-1)[0]


def _cellstr(value: Any, path: Path, what: str, probs: Problems) -> list[str]:
    """A MATLAB cell array of strings (or a char matrix) as a list of str."""
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        return [str(s).strip() for s in arr.ravel()]
    if arr.dtype != object:
        raise probs.fatal(path, f"field '{what}' must be a cell array of strings, "
                                f"found {arr.dtype}")
    out = []
    for el in arr.ravel():
        e = np.asarray(el)
        if e.dtype.kind != "U" or e.size > 1:
            raise probs.fatal(path, f"field '{what}' must hold one string per cell, found "
                                    f"{e.dtype} of shape {e.shape}")
        out.append(str(e.ravel()[0]).strip() if e.size else "")
    return out


def _strings(value: Any, path: Path, what: str, probs: Problems) -> list[str]:
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise probs.fatal(path, f"'{what}' must be a list of strings")
    return [str(v) for v in value]


def _label_values(arr: np.ndarray, path: Path, what: str, probs: Problems,
                  uncertain: bool) -> np.ndarray:
    """0/1 labels as uint8 (2, RAP's "uncertain", becomes 0 where ``uncertain``)."""
    if arr.dtype.kind not in "biuf":
        probs.add(path, f"{what}: labels must be numeric, found {arr.dtype}")
        return np.zeros(arr.shape, np.uint8)
    allowed = (0, 1, 2) if uncertain else (0, 1)
    bad = ~np.isin(arr, allowed)
    if bad.any():
        values = np.unique(arr[bad])[:5].tolist()
        probs.add(path, f"{what}: labels must be {'0, 1 or 2' if uncertain else '0 or 1'}; "
                        f"{int(bad.sum())} entries are not (e.g. {values})")
    return (arr == 1).astype(np.uint8)


def _label_matrix(value: Any, rows: int, cols: int, path: Path, probs: Problems, *, what: str,
                  uncertain: bool = False) -> np.ndarray | None:
    arr = np.asarray(value)
    if arr.ndim != 2:
        probs.add(path, f"{what}: label matrix must be 2-D, found shape {arr.shape}")
        return None
    ok = True
    if arr.shape[0] != rows:
        probs.add(path, f"{what}: label matrix has {arr.shape[0]} rows but {rows} images are named")
        ok = False
    if arr.shape[1] != cols:
        probs.add(path, f"{what}: label matrix has {arr.shape[1]} attribute columns, "
                        f"expected {cols}")
        ok = False
    labels = _label_values(arr, path, what, probs, uncertain)
    return labels if ok else None


def _indices(value: Any, n: int, base: int, path: Path, what: str,
             probs: Problems) -> np.ndarray | None:
    """Integer indices (``base``-based in the file) -> 0-based int64, or None if unusable."""
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        probs.add(path, f"{what}: indices must be numbers, found {arr.dtype}")
        return None
    arr = arr.ravel()
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        probs.add(path, f"{what}: indices must be whole numbers")
        return None
    idx = arr.astype(np.int64) - base
    out = (idx < 0) | (idx >= n)
    if out.any():
        probs.add(path, f"{what}: {int(out.sum())} indices outside {base}..{n - 1 + base} "
                        f"(e.g. {int(idx[out][0]) + base})")
        return None
    if len(np.unique(idx)) != len(idx):
        probs.add(path, f"{what}: {len(idx) - len(np.unique(idx))} indices repeat")
        return None
    return idx


def _finish_splits(splits: dict[str, np.ndarray], path: Path, what: str,
                   probs: Problems) -> dict[str, np.ndarray] | None:
    """Add trainval (train + val) where missing; trainval and test must exist and be disjoint."""
    if "trainval" not in splits and "train" in splits and "val" in splits:
        splits["trainval"] = np.concatenate([splits["train"], splits["val"]])
    for need in ("trainval", "test"):
        if need not in splits:
            probs.add(path, f"{what}: no usable {need!r} split")
            return None
    empty = [name for name, idx in splits.items() if len(idx) == 0]
    if empty:
        probs.add(path, f"{what}: split {empty[0]!r} is empty")
        return None
    shared = np.intersect1d(splits["trainval"], splits["test"])
    if len(shared):
        probs.add(path, f"{what}: {len(shared)} images are in both the test split and trainval")
    return splits


def _mat_partitions(value: Any, names: tuple[str, ...], n: int, path: Path, what: str,
                    probs: Problems) -> tuple[dict[str, np.ndarray], ...]:
    """A cell array of structs of 1-based index vectors (PETA's train/val/test, RAP's
    train_index/test_index) -> 0-based split dicts (RAP's train_index is trainval)."""
    cells = np.asarray(value)
    if cells.dtype != object or cells.size == 0:
        raise probs.fatal(path, f"field '{what}' must be a cell array of structs, found "
                                f"{cells.dtype} of shape {cells.shape}")
    out = []
    for k, cell in enumerate(cells.ravel()):
        s = np.asarray(cell)
        where = f"{what}{{{k + 1}}}"
        if s.dtype.names is None or s.size != 1:
            probs.add(path, f"{where} must be a 1x1 struct with fields {', '.join(names)}")
            continue
        rec = s.reshape(-1)[0]
        missing = [f for f in names if f not in rec.dtype.names]
        if missing:
            probs.add(path, f"missing field '{where}.{missing[0]}'")
            continue
        splits = {{"train_index": "trainval", "test_index": "test"}.get(f, f):
                  _indices(rec[f], n, 1, path, f"{where}.{f}", probs) for f in names}
        if any(v is None for v in splits.values()):
            continue  # already reported; the partition is left out
        splits = _finish_splits(splits, path, where, probs)
        if splits is not None:
            out.append(splits)
    if not out:
        raise probs.fatal(path, f"field '{what}' holds no usable partition")
    return tuple(out)


def _pickle_partitions(value: Any, n: int, path: Path,
                       probs: Problems) -> tuple[dict[str, np.ndarray], ...]:
    """RethinkPAR's partition EasyDict: each split an index array, or a list of them (runs)."""
    if not isinstance(value, dict):
        raise probs.fatal(path, "partition must be an EasyDict of index arrays")
    runs: dict[str, list] = {}
    for name, v in value.items():
        runs[name] = list(v) if isinstance(v, (list, tuple)) else [v]
    n_runs = max((len(v) for v in runs.values()), default=0)
    out = []
    for r in range(n_runs):
        where = "partition" if n_runs == 1 else f"partition run {r}"
        splits = {name: _indices(v[r], n, 0, path, f"{where}.{name}", probs)
                  for name, v in runs.items() if r < len(v)}
        if any(v is None for v in splits.values()):
            continue  # already reported; the run is left out
        splits = _finish_splits(splits, path, where, probs)
        if splits is not None:
            out.append(splits)
    if not out:
        raise probs.fatal(path, "partition holds no usable split")
    return tuple(out)


def _check_images(img_dir: Path, names: list[str], probs: Problems, context: str) -> list[str]:
    paths = []
    for name in names:
        p = img_dir / name
        image_ok(p, probs, context)
        paths.append(str(p))
    if not names:
        probs.add(img_dir, "no images listed")
    return paths


# --------------------------------------------------------------------------------------
# Synthetic labels: the mapping table of the module docstring
# --------------------------------------------------------------------------------------
_COLOUR_WORD = {"black": "Black", "white": "White", "grey": "Grey", "red": "Red", "blue": "Blue",
                "green": "Green", "yellow": "Yellow", "brown": "Brown", "purple": "Purple",
                "pink": "Pink", "orange": "Orange", "navy": "Blue"}
_HAIR_WORD = {"black": "Black", "brown": "Brown", "blond": "Yellow", "grey": "Grey", "red": "Red"}
_RAP1_LOW = {"Black", "White", "Gray", "Red", "Green", "Blue", "Yellow"}
_RAP1_SHOES = {"Black", "White", "Gray", "Red", "Green", "Blue", "Yellow", "Brown"}


def _gray(word: str) -> str:
    return "Gray" if word == "Grey" else word


def _facts(ident, view: str) -> dict[str, Any]:
    """What the rendering shows, in the terms the vocabularies below map from."""
    two_tone = ident.upper_pattern in ("stride", "plaid", "splice")
    return {
        "upper_colours": {_COLOUR_WORD[ident.upper_colour]}
        | ({_COLOUR_WORD[ident.upper_colour2]} if two_tone else set()),
        "upper_mixture": two_tone,
        "lower_colour": _COLOUR_WORD[ident.lower_colour],
        "lower_mixture": ident.lower_pattern != "plain",
        "shoe_colour": _COLOUR_WORD[ident.shoe_colour],
        # the renderer turns odd identities the other way in side views (render.pose_person)
        "face": {"front": "faceFront", "back": "faceBack"}.get(
            view, "faceLeft" if ident.pid % 2 else "faceRight"),
        "body": ("BodyThin" if ident.build < 0.95 else
                 "BodyFat" if ident.build > 1.1 else "BodyNormal"),
    }


def _carried(ident) -> dict[str, bool]:
    """What the person carries, by where: the hand items, bags and the box held in front."""
    item = ident.hand_item
    return {"plastic": item == "plastic_bag", "paper": item == "paper_bag",
            "trunk": item == "trunk", "umbrella": item == "umbrella",
            "in_hand": ident.handbag or item in ("plastic_bag", "paper_bag"),
            "anything": (ident.backpack or ident.shoulder_bag or ident.handbag
                         or ident.holds_object or item != "none")}


def peta_positives(ident, view: str) -> set[str]:
    """PETA attributes that are 1 for ``ident`` seen from ``view``."""
    f, c = _facts(ident, view), _carried(ident)
    up, low, shoes = ident.upper, ident.lower, ident.shoes
    on = {
        "personalFemale": ident.female, "personalMale": not ident.female,
        "personalLess15": ident.age == "less18", "personalLess30": ident.age == "18to30",
        "personalLess45": ident.age == "31to45", "personalLess60": ident.age == "46to60",
        "personalLarger60": ident.age == "over60",
        "hairBald": ident.bald, "hairLong": ident.long_hair,
        "hairShort": not (ident.long_hair or ident.bald),
        f"hair{_HAIR_WORD[ident.hair]}": not ident.bald,
        "accessoryHat": ident.hat, "accessorySunglasses": ident.glasses,
        "accessoryMuffler": ident.scarf,
        "accessoryNothing": not (ident.hat or ident.glasses or ident.scarf),
        "upperBodyShortSleeve": up in SHORT_SLEEVED, "upperBodyLongSleeve": up in LONG_SLEEVED,
        "upperBodyNoSleeve": up == "vest", "upperBodyTshirt": up == "tshirt",
        "upperBodyVNeck": up == "vneck", "upperBodySweater": up == "sweater",
        "upperBodyJacket": up in ("jacket", "cotton", "coat"),
        "upperBodySuit": up == "suit", "upperBodyFormal": up == "suit",
        "upperBodyCasual": up != "suit", "upperBodyOther": up in ("shirt", "tight"),
        "upperBodyLogo": ident.upper_pattern == "logo",
        "upperBodyPlaid": ident.upper_pattern == "plaid",
        "upperBodyThinStripes": ident.upper_pattern == "stride",
        "lowerBodyTrousers": low in ("trousers", "tight"), "lowerBodyJeans": low == "jeans",
        "lowerBodyShorts": low == "shorts",
        "lowerBodyShortSkirt": low in ("short_skirt", "dress"),
        "lowerBodyLongSkirt": low == "skirt",
        "lowerBodyFormal": up == "suit", "lowerBodyCasual": up != "suit",
        "lowerBodyThinStripes": ident.lower_pattern == "stripe",
        f"lowerBody{f['lower_colour']}": True,
        "footwearBoots": shoes == "boots", "footwearLeatherShoes": shoes == "leather",
        "footwearSneaker": shoes == "sneaker", "footwearSandals": shoes == "sandal",
        "footwearShoes": shoes in ("casual", "cloth"),
        f"footwear{f['shoe_colour']}": True,
        "carryingBackpack": ident.backpack, "carryingMessengerBag": ident.shoulder_bag,
        "carryingPlasticBags": c["plastic"], "carryingLuggageCase": c["trunk"],
        "carryingUmbrella": c["umbrella"],
        "carryingOther": ident.handbag or ident.holds_object or c["paper"],
        "carryingNothing": not c["anything"],
    }
    return {k for k, v in on.items() if v} | {f"upperBody{c}" for c in f["upper_colours"]}


def _rap_common(ident, view: str) -> dict[str, bool]:
    """The attributes RAP v1 and RAPv2 name alike."""
    f, c = _facts(ident, view), _carried(ident)
    up, low, shoes = ident.upper, ident.lower, ident.shoes
    return {
        "AgeLess16": ident.age == "less18", "Age17-30": ident.age == "18to30",
        "Age31-45": ident.age == "31to45", f["body"]: True,
        "Customer": not ident.clerk,
        "hs-BaldHead": ident.bald, "hs-LongHair": ident.long_hair,
        "hs-BlackHair": ident.hair == "black" and not ident.bald,
        "hs-Hat": ident.hat, "hs-Glasses": ident.glasses, "hs-Muffler": ident.scarf,
        "ub-Shirt": up == "shirt", "ub-Sweater": up == "sweater", "ub-Vest": up == "vest",
        "ub-TShirt": up in SHORT_SLEEVED, "ub-Cotton": up == "cotton", "ub-SuitUp": up == "suit",
        "ub-Tight": up == "tight", "ub-ShortSleeve": up in SHORT_SLEEVED,
        "lb-LongTrousers": low == "trousers", "lb-Skirt": low == "skirt",
        "lb-ShortSkirt": low == "short_skirt", "lb-Dress": low == "dress",
        "lb-Jeans": low == "jeans", "lb-TightTrousers": low == "tight",
        "shoes-Leather": shoes == "leather", "shoes-Boots": shoes == "boots",
        "shoes-Cloth": shoes == "cloth",
        "action-Calling": ident.calling, "action-Holding": ident.holds_object,
        "action-Pulling": c["trunk"],
        f["face"]: True,
    }


def rap_positives(ident, view: str) -> set[str]:
    """RAP v1 attributes that are 1 for ``ident`` seen from ``view``."""
    f, c = _facts(ident, view), _carried(ident)
    low, shoe = _gray(f["lower_colour"]), _gray(f["shoe_colour"])
    on = {
        **_rap_common(ident, view),
        "Female": ident.female, "Clerk": ident.clerk,
        "ub-Jacket": ident.upper in ("jacket", "coat"),  # v1 has no "Others" top
        "shoes-Sport": ident.shoes == "sneaker",
        "shoes-Casual": ident.shoes in ("casual", "sandal"),  # v1 has no sandals
        "attach-Backpack": ident.backpack, "attach-SingleShoulderBag": ident.shoulder_bag,
        "attach-HandBag": ident.handbag, "attach-Box": ident.holds_object,
        "attach-PlasticBag": c["plastic"], "attach-PaperBag": c["paper"],
        "attach-HandTrunk": c["trunk"], "attach-Other": c["umbrella"],
        "action-CarrybyHand": c["in_hand"],
        "up-Mixture": f["upper_mixture"], "low-Mixture": f["lower_mixture"],
        f"low-{low}": low in _RAP1_LOW, f"shoes-{shoe}": shoe in _RAP1_SHOES,
    }
    return {k for k, v in on.items() if v} | {f"up-{_gray(c)}" for c in f["upper_colours"]}


def rap2_positives(ident, view: str) -> set[str]:
    """RAPv2 attributes (RAP_zs's vocabulary) that are 1 for ``ident`` seen from ``view``."""
    f, c = _facts(ident, view), _carried(ident)
    up = lambda c: "up-ColorRed" if c == "Red" else f"ub-Color{c}"  # noqa: E731 (RAPv2's name)
    on = {
        **_rap_common(ident, view),
        "Femal": ident.female, "Age46-60": ident.age == "46to60",
        "AgeBiger60": ident.age == "over60", "Employee": ident.clerk,
        "ub-Jacket": ident.upper == "jacket", "ub-Others": ident.upper == "coat",
        "lb-Shorts": ident.lower == "shorts",
        "shoes-Sports": ident.shoes == "sneaker", "shoes-Sandals": ident.shoes == "sandal",
        "shoes-Casual": ident.shoes == "casual",
        "attachment-Backpack": ident.backpack, "attachment-ShoulderBag": ident.shoulder_bag,
        "attachment-HandBag": ident.handbag, "attachment-Box": ident.holds_object,
        "attachment-PlasticBag": c["plastic"], "attachment-PaperBag": c["paper"],
        "attachment-HandTrunk": c["trunk"], "attachment-Other": c["umbrella"],
        "action-CarryingByHand": c["in_hand"],
        "ub-ColorMixture": f["upper_mixture"], "lb-ColorMixture": f["lower_mixture"],
        f"lb-Color{_gray(f['lower_colour'])}": True,
        f"shoes-Color{_gray(f['shoe_colour'])}": True,
    }
    return {k for k, v in on.items() if v} | {up(_gray(c)) for c in f["upper_colours"]}


def _vector(vocab: tuple[str, ...], positives: set[str]) -> np.ndarray:
    unknown = positives - set(vocab)
    if unknown:  # a typo in the tables above, never a data problem
        raise AssertionError(f"attribute names not in the vocabulary: {sorted(unknown)}")
    return np.array([name in positives for name in vocab], dtype=np.uint8)


# --------------------------------------------------------------------------------------
# Synthetic writer
# --------------------------------------------------------------------------------------
# People and cameras of the attribute datasets: nobody else's.
PA100K_PID_BASE, PETA_PID_BASE, RAP_PID_BASE = 400_000, 410_000, 420_000
PA100K_CAM_BASE, PETA_CAM_BASE, RAP_CAM_BASE = 500, 540, 560
PETA_NUM_CAMS, RAP_NUM_CAMS, PA100K_NUM_CAMS = 10, 26, 30  # PETA: its 10 source datasets
ZS_FRACTIONS = (0.6, 0.2, 0.2)  # identities' share of images in train / val / test


@dataclass(frozen=True)
class Shot:
    """One planned image: who, which camera, the how-manieth image of that person."""

    pid: int
    cam: int
    k: int
    h: int
    w: int


def plan(world, key: str) -> list[Shot]:
    """The images a synthetic attribute dataset holds, in file order (a pure function of
    the world: the tests use it to know who is in which image)."""
    # smoke: fewer, smaller crops (rendering and the default job's fine-tuning are the cost;
    # the `small` world is the one whose test sets can tell two backbones apart)
    small = world.size == "smoke"
    n, per_id, base, cam_base, n_cams, hs = {
        "pa100k": (world.pick(160, 2000, 20000), (1, 2), PA100K_PID_BASE, PA100K_CAM_BASE,
                   PA100K_NUM_CAMS, (96, 136) if small else (112, 200)),
        "peta": (world.pick(120, 1900, 9500), (1, 3), PETA_PID_BASE, PETA_CAM_BASE,
                 PETA_NUM_CAMS, (96, 136) if small else (96, 180)),
        "rap": (world.pick(120, 2000, 10000), (2, 5), RAP_PID_BASE, RAP_CAM_BASE, RAP_NUM_CAMS,
                (96, 136) if small else (120, 220)),
    }[key]
    shots: list[Shot] = []
    person = 0
    while len(shots) < n:
        rng = world.rng(key, "person", person)
        for k in range(int(rng.integers(per_id[0], per_id[1] + 1))):
            if len(shots) == n:
                break
            h = int(rng.integers(*hs))
            w = max(32, int(round(h * rng.uniform(0.36, 0.5))))
            shots.append(Shot(base + person, cam_base + int(rng.integers(n_cams)), k, h, w))
        person += 1
    if key == "pa100k":  # PA100k's file order mixes people; PETA and RAP keep them together
        order = world.rng(key, "order").permutation(len(shots))
        shots = [shots[i] for i in order]
    return shots


def write_synthetic(world, root: Path) -> dict[str, int]:
    """Write PA100k/, PETA/ (with PETA_zs's pickle) and RAP/ (with RAP_zs's) into ``root``."""
    root = Path(root)
    counts: dict[str, int] = {}
    counts.update(_write_pa100k(world, root / "PA100k"))
    counts.update(_write_peta(world, root / "PETA"))
    counts.update(_write_rap(world, root / "RAP"))
    return counts


def _render(world, key: str, shot: Shot):
    return world.crop(shot.pid, shot.cam, shot.h, shot.w, key, shot.k)


def _save_image(path: Path, arr: np.ndarray) -> None:
    """PNG (fast zlib) or JPEG; the world writes into a staging folder, so no fsync here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
    else:
        data = encode_image(arr, "JPEG")
    with open(path, "wb") as fh:
        fh.write(data)


def _write_pa100k(world, out: Path) -> dict[str, int]:
    from bench.data.synth.people import PA100K_ATTRIBUTES

    shots = plan(world, "pa100k")
    n = len(shots)
    n_train, n_val = int(round(0.8 * n)), int(round(0.1 * n))
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    labels = np.zeros((n, len(PA100K_ATTRIBUTES)), np.uint8)
    for i, shot in enumerate(shots):
        crop = _render(world, "pa100k", shot)
        labels[i] = world.identity(shot.pid).attribute_vector(crop.view)
        _save_image(out / "data" / names[i], crop.image)
    cuts = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val),
            "test": slice(n_train + n_val, n)}
    mat: dict[str, Any] = {"attributes": _cell(PA100K_ATTRIBUTES)}
    for s, sl in cuts.items():
        mat[f"{s}_images_name"] = _cell(names[sl])
        mat[f"{s}_label"] = labels[sl]
    write_mat(out / "annotation.mat", mat)
    return {"pa100k": n, "pa100k_train": n_train, "pa100k_val": n_val,
            "pa100k_test": n - n_train - n_val}


def _write_peta(world, out: Path) -> dict[str, int]:
    shots = plan(world, "peta")
    n = len(shots)
    data = np.zeros((n, 4 + len(PETA_ATTRIBUTES)), np.float64)
    for i, shot in enumerate(shots):
        crop = _render(world, "peta", shot)
        ident = world.identity(shot.pid)
        # leading columns: image number, person number, source (camera) number, image of person
        data[i, :4] = (i + 1, shot.pid - PETA_PID_BASE + 1, shot.cam - PETA_CAM_BASE + 1,
                       shot.k + 1)
        data[i, 4:] = _vector(PETA_ATTRIBUTES, peta_positives(ident, crop.view))
        _save_image(out / "images" / f"{i + 1:05d}.png", crop.image)
    # PETA's five partitions: random over images, 50% train, 10% val, 40% test
    n_train, n_val = n // 2, n // 10
    parts = np.empty((5, 1), dtype=object)
    for r in range(5):
        perm = world.rng("peta", "partition", r).permutation(n) + 1
        parts[r, 0] = {"train": _col(perm[:n_train]), "val": _col(perm[n_train:n_train + n_val]),
                       "test": _col(perm[n_train + n_val:])}
    write_mat(out / "PETA.mat", {"peta": {
        "data": data, "attribute": _cell(PETA_ATTRIBUTES),
        "selected_attribute": np.arange(1, PETA_NUM_EVAL + 1, dtype=np.float64)[None, :],
        "partion_attribute": parts}})
    labels = data[:, 4:]
    zs = _zero_shot_split(world, "peta_zs", [s.pid for s in shots])
    info = _rethinkpar_info(
        "peta", "./data/PETA/images", [f"{i + 1:05d}.png" for i in range(n)], labels,
        list(PETA_ATTRIBUTES), {"eval": list(PETA_GROUP_ORDER),
                                "color": list(range(PETA_NUM_EVAL, 79)),
                                "extra": list(range(79, len(PETA_ATTRIBUTES)))}, zs)
    write_rethinkpar_pickle(out / ZS_PICKLE, info)
    return {"peta": n, "peta_test": n - n_train - n_val,
            **{f"peta_zs_{k}": len(v) for k, v in zs.items() if k != "trainval"}}


def _write_rap(world, out: Path) -> dict[str, int]:
    shots = plan(world, "rap")
    n = len(shots)
    cols, zs_eval = rap_zs_layout()
    labels = np.zeros((n, len(RAP_ATTRIBUTES)), np.uint8)
    labels2 = np.zeros((n, len(cols)), np.uint8)
    position = np.zeros((n, 16), np.float64)
    names = []
    for i, shot in enumerate(shots):
        crop = _render(world, "rap", shot)
        ident = world.identity(shot.pid)
        labels[i] = _vector(RAP_ATTRIBUTES, rap_positives(ident, crop.view))
        labels2[i] = _vector(RAP2_ATTRIBUTES, rap2_positives(ident, crop.view))[cols]
        position[i] = _part_boxes(crop.labels)
        cam = shot.cam - RAP_CAM_BASE + 1
        names.append(f"CAM{cam:02d}_2014-02-{1 + cam % 28:02d}_tarid{shot.pid - RAP_PID_BASE}"
                     f"_frame{100 * i + shot.k}_line1.png")
        _save_image(out / "RAP_dataset" / names[-1], crop.image)
    # RAP v1's five partitions: random over images, 80% trainval, 20% test
    n_tv = int(round(0.8 * n))
    parts = np.empty((5, 1), dtype=object)
    for r in range(5):
        perm = world.rng("rap", "partition", r).permutation(n) + 1
        parts[r, 0] = {"train_index": _row(perm[:n_tv]), "test_index": _row(perm[n_tv:])}
    empty = _cell([""] * len(RAP_ATTRIBUTES))  # no Chinese names or explanations here
    write_mat(out / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": {
        "partion": parts, "label": labels, "attribute_chinese": empty,
        "attribute_eng": _cell(RAP_ATTRIBUTES), "position": position,
        "imagesname": _cell(names), "attribute_exp": empty}})
    zs = _zero_shot_split(world, "rap_zs", [s.pid for s in shots])
    colours = [*range(54, 96)]
    info = _rethinkpar_info(
        "rap2", "./data/RAP/RAP_dataset", names, labels2, [RAP2_ATTRIBUTES[c] for c in cols],
        {"eval": zs_eval, "color": colours, "extra": list(range(96, len(cols)))}, zs)
    write_rethinkpar_pickle(out / ZS_PICKLE, info)
    return {"rap": n, "rap_test": n - n_tv,
            **{f"rap_zs_{k}": len(v) for k, v in zs.items() if k != "trainval"}}


def _zero_shot_split(world, key: str, pids: list[int]) -> dict[str, np.ndarray]:
    """Identity-disjoint train/val/test (0-based image indices): people in a seeded order,
    each going to the split its images' midpoint falls in (ZS_FRACTIONS of the images)."""
    pids_arr = np.asarray(pids)
    people, sizes = np.unique(pids_arr, return_counts=True)
    order = world.rng(key, "split").permutation(len(people))
    people, sizes = people[order], sizes[order]
    mid = (np.cumsum(sizes) - sizes / 2) / sizes.sum()
    which = np.searchsorted(np.cumsum(ZS_FRACTIONS)[:2], mid, side="right")
    which[0], which[-1] = 0, 2  # train and test are never empty
    if len(which) > 2 and not (which == 1).any():
        which[len(which) // 2] = 1
    split_of = dict(zip(people.tolist(), which.tolist()))
    assign = np.array([split_of[p] for p in pids])
    out = {name: np.flatnonzero(assign == s).astype(np.int64)
           for s, name in enumerate(("train", "val", "test"))}
    out["trainval"] = np.concatenate([out["train"], out["val"]])
    return out


def _rethinkpar_info(description: str, img_root: str, names: list[str], labels: np.ndarray,
                     attr_names: list[str], label_idx: dict, parts: dict) -> dict:
    """The EasyDict RethinkPAR's preprocessing pickles, in its key order."""
    return {
        "description": description, "reorder": "group_order", "root": img_root,
        "image_name": list(names), "label": labels, "attr_name": list(attr_names),
        "label_idx": _EasyDict(label_idx),
        "partition": _EasyDict({k: parts[k] for k in ("train", "val", "trainval", "test")}),
        "weight_train": [labels[parts["train"]].mean(0).astype(np.float32)],
        "weight_trainval": [labels[parts["trainval"]].mean(0).astype(np.float32)],
    }


def _cell(strings: Iterable[str]) -> np.ndarray:
    strings = list(strings)
    arr = np.empty((len(strings), 1), dtype=object)
    arr[:, 0] = strings
    return arr


def _col(idx: np.ndarray) -> np.ndarray:
    return np.asarray(idx, np.float64)[:, None]


def _row(idx: np.ndarray) -> np.ndarray:
    return np.asarray(idx, np.float64)[None, :]


def _part_boxes(lip: np.ndarray) -> np.ndarray:
    """RAP-style [x y w h] boxes (1-based pixels, in the crop) of the whole body, head and
    shoulders, upper body and lower body, from the crop's LIP part map."""
    from bench.data.synth.render import L

    groups = (
        None,
        ("Hat", "Hair", "Sunglasses", "Face"),
        ("UpperClothes", "Coat", "Dress", "Left-arm", "Right-arm", "Scarf"),
        ("Pants", "Skirt", "Left-leg", "Right-leg", "Left-shoe", "Right-shoe"),
    )
    out = np.zeros(16)
    for g, names in enumerate(groups):
        mask = lip > 0 if names is None else np.isin(lip, [L[n] for n in names])
        ys, xs = np.nonzero(mask)
        if len(ys):
            out[4 * g:4 * g + 4] = (xs.min() + 1, ys.min() + 1, xs.max() - xs.min() + 1,
                                    ys.max() - ys.min() + 1)
    return out


MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: hcbench synthetic world"


def write_mat(path: Path, variables: dict[str, Any]) -> None:
    """scipy.io.savemat, uncompressed, with a fixed header text (savemat stamps the time
    there) so the same content always gives the same bytes."""
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=False, oned_as="column")
    data = bytearray(buf.getvalue())
    data[:116] = MAT_HEADER.ljust(116, b" ")
    atomic_write_bytes(path, bytes(data))


# --------------------------------------------------------------------------------------
# Pickles that read back as EasyDict in RethinkPAR and as dict through safe_load_pickle
# --------------------------------------------------------------------------------------
class _EasyDict(dict):
    """A dict the writer pickles as ``easydict.EasyDict`` (without needing easydict)."""


class _EasyDictPickler(pickle._Pickler):  # the Python pickler: its dispatch can be extended
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_easydict(self, obj: dict) -> None:
        # what EasyDict pickles as: easydict.EasyDict(), its items, then its attribute
        # dict (EasyDict mirrors every item as an attribute) as the BUILD state
        self.write(pickle.GLOBAL + b"easydict\nEasyDict\n")
        self.write(pickle.EMPTY_TUPLE + pickle.REDUCE)
        self.memoize(obj)
        self.write(pickle.MARK)
        for k, v in obj.items():
            self.save(k)
            self.save(v)
        self.write(pickle.SETITEMS)
        self.save(dict(obj))
        self.write(pickle.BUILD)

    dispatch[_EasyDict] = _save_easydict


def write_rethinkpar_pickle(path: Path, info: dict) -> None:
    """Pickle ``info`` as RethinkPAR's preprocessing does: the top level and its
    ``label_idx`` / ``partition`` as EasyDicts (protocol 3, as Python 3 writes by default)."""
    buf = io.BytesIO()
    _EasyDictPickler(buf, protocol=3).dump(_EasyDict(info))
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["AttrDataset", "PETA_ATTRIBUTES", "RAP_ATTRIBUTES", "RAP2_ATTRIBUTES", "plan",
           "read_pa100k", "read_peta", "read_peta_zs", "read_rap", "read_rap_zs",
           "rap_zs_layout", "write_synthetic"]
