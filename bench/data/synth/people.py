"""Persistent synthetic identities: body, colours, clothing, accessories, attributes, caption.

An identity is a pure function of ``(world seed, pid)``: the same person looks the same
(up to pose, viewpoint and camera) in every image of every dataset the world writes,
which is what gives re-identification and person search real signal.  Its attributes
use the names of PA100k's 26 attributes, so the synthetic PA100k is labelled in the real
dataset's vocabulary; every one of them is visible in the rendering (see render.py), so
attribute recognition has real signal too.  View attributes (Front/Side/Back) belong to
an image, not a person, and are added by the renderer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Named colours: (name, RGB).  Names feed the captions.
COLOURS = (
    ("black", (25, 25, 28)), ("white", (235, 235, 230)), ("grey", (128, 128, 130)),
    ("red", (200, 35, 35)), ("blue", (35, 70, 190)), ("green", (40, 150, 60)),
    ("yellow", (230, 200, 40)), ("brown", (120, 75, 40)), ("purple", (120, 50, 150)),
    ("pink", (235, 130, 170)), ("orange", (240, 130, 30)), ("navy", (20, 30, 90)),
)
SKINS = ((245, 215, 190), (225, 180, 145), (190, 140, 100), (140, 95, 65), (95, 65, 45))
HAIRS = (("black", (20, 18, 18)), ("brown", (90, 60, 35)), ("blond", (215, 185, 110)),
         ("grey", (160, 160, 160)), ("red", (150, 60, 30)))

UPPER_KINDS = ("short_sleeve", "long_sleeve", "coat")
UPPER_PATTERNS = ("plain", "stride", "plaid", "logo", "splice")
LOWER_KINDS = ("trousers", "shorts", "skirt", "dress")
LOWER_PATTERNS = ("plain", "stripe", "pattern")
AGES = ("less18", "18to60", "over60")

# PA100k's attribute names, in its order.
PA100K_ATTRIBUTES = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses",
    "HandBag", "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve",
    "UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern",
    "LongCoat", "Trousers", "Shorts", "Skirt&Dress", "boots",
)
VIEWS = ("front", "side", "back")


@dataclass(frozen=True)
class Identity:
    pid: int
    female: bool
    age: str  # less18 | 18to60 | over60
    height: float  # relative body height, 1.0 = adult average
    build: float  # relative width
    skin: tuple[int, int, int]
    hair: str
    hair_rgb: tuple[int, int, int]
    long_hair: bool
    upper: str  # UPPER_KINDS
    upper_colour: str
    upper_pattern: str  # UPPER_PATTERNS
    upper_colour2: str  # second colour for patterns
    lower: str  # LOWER_KINDS
    lower_colour: str
    lower_pattern: str  # LOWER_PATTERNS
    shoe_colour: str
    boots: bool
    hat: bool
    hat_colour: str
    glasses: bool
    handbag: bool
    shoulder_bag: bool
    backpack: bool
    bag_colour: str
    holds_object: bool

    def attributes(self, view: str | None = None) -> dict[str, int]:
        """PA100k-named binary attributes; the three view attributes need ``view``."""
        a = {
            "Female": self.female, "AgeOver60": self.age == "over60",
            "Age18-60": self.age == "18to60", "AgeLess18": self.age == "less18",
            "Front": view == "front", "Side": view == "side", "Back": view == "back",
            "Hat": self.hat, "Glasses": self.glasses, "HandBag": self.handbag,
            "ShoulderBag": self.shoulder_bag, "Backpack": self.backpack,
            "HoldObjectsInFront": self.holds_object,
            "ShortSleeve": self.upper == "short_sleeve",
            "LongSleeve": self.upper in ("long_sleeve", "coat"),
            "UpperStride": self.upper_pattern == "stride", "UpperLogo": self.upper_pattern == "logo",
            "UpperPlaid": self.upper_pattern == "plaid",
            "UpperSplice": self.upper_pattern == "splice",
            "LowerStripe": self.lower_pattern == "stripe",
            "LowerPattern": self.lower_pattern == "pattern",
            "LongCoat": self.upper == "coat", "Trousers": self.lower == "trousers",
            "Shorts": self.lower == "shorts", "Skirt&Dress": self.lower in ("skirt", "dress"),
            "boots": self.boots,
        }
        return {k: int(v) for k, v in a.items()}

    def attribute_vector(self, view: str | None = None) -> np.ndarray:
        a = self.attributes(view)
        return np.array([a[k] for k in PA100K_ATTRIBUTES], dtype=np.uint8)

    def caption(self) -> str:
        """A sentence describing the person, as image-text datasets (LUPerson-TA) have."""
        who = {"less18": "child", "18to60": "woman" if self.female else "man",
               "over60": "elderly woman" if self.female else "elderly man"}[self.age]
        if self.age == "less18":
            who = "girl" if self.female else "boy"
        upper = {"short_sleeve": "short-sleeved shirt", "long_sleeve": "long-sleeved shirt",
                 "coat": "long coat"}[self.upper]
        pattern = {"plain": "", "stride": "striped ", "plaid": "plaid ", "logo": "",
                   "splice": f"{self.upper_colour2}-spliced "}[self.upper_pattern]
        logo = " with a logo" if self.upper_pattern == "logo" else ""
        lower = {"trousers": "trousers", "shorts": "shorts", "skirt": "skirt",
                 "dress": "dress"}[self.lower]
        lpat = {"plain": "", "stripe": "striped ", "pattern": "patterned "}[self.lower_pattern]
        parts = [f"A {who} with {'long' if self.long_hair else 'short'} {self.hair} hair "
                 f"wearing a {pattern}{self.upper_colour} {upper}{logo} and "
                 f"{lpat}{self.lower_colour} {lower}"]
        parts.append(f"{self.shoe_colour} {'boots' if self.boots else 'shoes'}")
        extras = []
        if self.hat:
            extras.append(f"a {self.hat_colour} hat")
        if self.glasses:
            extras.append("glasses")
        if self.backpack:
            extras.append(f"a {self.bag_colour} backpack")
        if self.shoulder_bag:
            extras.append(f"a {self.bag_colour} shoulder bag")
        if self.handbag:
            extras.append(f"a {self.bag_colour} handbag")
        if self.holds_object:
            extras.append("something held in front")
        text = ", ".join(parts)
        if extras:
            text += ", with " + (", ".join(extras[:-1]) + " and " + extras[-1]
                                 if len(extras) > 1 else extras[0])
        return text + "."


def colour_rgb(name: str) -> tuple[int, int, int]:
    return dict(COLOURS)[name]


def make_identity(seed: int, pid: int) -> Identity:
    """The identity ``pid`` of the world with ``seed``: deterministic, order-independent."""
    rng = np.random.default_rng([seed, 1, pid])
    names = [c for c, _ in COLOURS]

    def colour() -> str:
        return names[rng.integers(len(names))]

    age = AGES[rng.choice(3, p=[0.15, 0.7, 0.15])]
    female = bool(rng.random() < 0.5)
    lower = LOWER_KINDS[rng.choice(4, p=[0.5, 0.2, 0.15, 0.15] if female else [0.75, 0.25, 0, 0])]
    upper = UPPER_KINDS[rng.choice(3, p=[0.4, 0.4, 0.2])]
    hair_name, hair_rgb = HAIRS[rng.choice(5, p=[0.35, 0.3, 0.15, 0.1, 0.1] if age != "over60"
                                           else [0.1, 0.1, 0.1, 0.65, 0.05])]
    upper_colour = colour()
    upper_colour2 = colour()
    while upper_colour2 == upper_colour:
        upper_colour2 = colour()
    bag = rng.random(3) < (0.18, 0.22, 0.25)
    return Identity(
        pid=pid, female=female, age=age,
        height=float({"less18": 0.72, "18to60": 1.0, "over60": 0.95}[age]
                     * rng.uniform(0.92, 1.06) * (0.95 if female else 1.0)),
        build=float(rng.uniform(0.85, 1.2)),
        skin=SKINS[rng.integers(len(SKINS))],
        hair=hair_name, hair_rgb=hair_rgb, long_hair=bool(rng.random() < (0.7 if female else 0.1)),
        upper=upper, upper_colour=upper_colour,
        upper_pattern=UPPER_PATTERNS[rng.choice(5, p=[0.5, 0.14, 0.12, 0.12, 0.12])],
        upper_colour2=upper_colour2,
        lower=lower, lower_colour=colour(),
        lower_pattern=LOWER_PATTERNS[rng.choice(3, p=[0.7, 0.15, 0.15])],
        shoe_colour=colour(), boots=bool(rng.random() < 0.2),
        hat=bool(rng.random() < 0.2), hat_colour=colour(),
        glasses=bool(rng.random() < 0.2),
        handbag=bool(bag[0]), shoulder_bag=bool(bag[1]), backpack=bool(bag[2]),
        bag_colour=colour(), holds_object=bool(rng.random() < 0.1),
    )
