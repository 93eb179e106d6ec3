"""Persistent synthetic identities: body, colours, clothing, accessories, attributes, caption.

An identity is a pure function of ``(world seed, pid)``: the same person looks the same
(up to pose, viewpoint and camera) in every image of every dataset the world writes,
which is what gives re-identification and person search real signal.  Its attributes
use the names of PA100k's 26 attributes, so the synthetic PA100k is labelled in the real
dataset's vocabulary; every one of them is visible in the rendering (see render.py), so
attribute recognition has real signal too.  View attributes (Front/Side/Back) belong to
an image, not a person, and are added by the renderer.  The PETA and RAP labels are mapped
from the same fields (``bench/data/par.py``); the fields PA100k does not need (five age
groups, ten kinds of top, seven of bottom, six of shoes, bald heads, scarves, things
carried in the hand, phone calls, clerks' aprons) are there so that most of the attributes
those datasets evaluate are drawn too.
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

# Tops: T-shirt, V-neck T-shirt (short sleeves), shirt, sweater (ribbed hem and cuffs),
# zipped jacket, padded cotton jacket (quilted, puffy), suit (white shirt and tie at the
# chest), sleeveless vest, tight long-sleeved top, long coat.
UPPER_KINDS = ("tshirt", "vneck", "shirt", "sweater", "jacket", "cotton", "suit", "vest",
               "tight", "coat")
SHORT_SLEEVED = ("tshirt", "vneck")
LONG_SLEEVED = ("shirt", "sweater", "jacket", "cotton", "suit", "tight", "coat")
UPPER_PATTERNS = ("plain", "stride", "plaid", "logo", "splice")
# Bottoms: trousers, jeans (faded at the knees), tight trousers (thin legs), shorts, short
# skirt (mid-thigh), skirt (below the knee), dress (the top's colour continued).
LOWER_KINDS = ("trousers", "jeans", "tight", "shorts", "short_skirt", "skirt", "dress")
LONG_LEGGED = ("trousers", "jeans", "tight")
SKIRTS = ("short_skirt", "skirt", "dress")
LOWER_PATTERNS = ("plain", "stripe", "pattern")
# Shoes: plain casual shoes, sneakers (white sole), leather shoes (dark, shiny toe), cloth
# shoes (white toe cap), sandals (bare feet and a strap), boots (up the shin).
SHOE_KINDS = ("casual", "sneaker", "leather", "cloth", "sandal", "boots")
# Something carried in the right hand: a plastic bag (white), a paper bag (brown, square),
# a suitcase pulled behind, a closed umbrella.
HAND_ITEMS = ("none", "plastic_bag", "paper_bag", "trunk", "umbrella")
# Age groups; their visible cues: a child's height, a receding hairline from 31, grey
# streaks from 46, grey hair (mostly) over 60, and some men of 31 and over are bald.
AGES = ("less18", "18to30", "31to45", "46to60", "over60")
ADULT_AGES = ("18to30", "31to45", "46to60")

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
    age: str  # AGES
    height: float  # relative body height, 1.0 = adult average
    build: float  # relative width
    skin: tuple[int, int, int]
    hair: str
    hair_rgb: tuple[int, int, int]
    long_hair: bool
    bald: bool
    upper: str  # UPPER_KINDS
    upper_colour: str
    upper_pattern: str  # UPPER_PATTERNS
    upper_colour2: str  # second colour for patterns
    lower: str  # LOWER_KINDS
    lower_colour: str
    lower_pattern: str  # LOWER_PATTERNS
    shoes: str  # SHOE_KINDS
    shoe_colour: str
    hat: bool
    hat_colour: str
    glasses: bool
    scarf: bool
    scarf_colour: str
    handbag: bool
    shoulder_bag: bool
    backpack: bool
    bag_colour: str
    holds_object: bool  # a box held in front with both hands
    hand_item: str  # HAND_ITEMS
    calling: bool  # a phone held to the right ear
    clerk: bool  # a shop clerk's apron
    apron_colour: str

    @property
    def boots(self) -> bool:
        return self.shoes == "boots"

    def attributes(self, view: str | None = None) -> dict[str, int]:
        """PA100k-named binary attributes; the three view attributes need ``view``."""
        a = {
            "Female": self.female, "AgeOver60": self.age == "over60",
            "Age18-60": self.age in ADULT_AGES, "AgeLess18": self.age == "less18",
            "Front": view == "front", "Side": view == "side", "Back": view == "back",
            "Hat": self.hat, "Glasses": self.glasses, "HandBag": self.handbag,
            "ShoulderBag": self.shoulder_bag, "Backpack": self.backpack,
            "HoldObjectsInFront": self.holds_object,
            "ShortSleeve": self.upper in SHORT_SLEEVED,
            "LongSleeve": self.upper in LONG_SLEEVED,
            "UpperStride": self.upper_pattern == "stride", "UpperLogo": self.upper_pattern == "logo",
            "UpperPlaid": self.upper_pattern == "plaid",
            "UpperSplice": self.upper_pattern == "splice",
            "LowerStripe": self.lower_pattern == "stripe",
            "LowerPattern": self.lower_pattern == "pattern",
            "LongCoat": self.upper == "coat",
            "Trousers": self.lower in LONG_LEGGED,
            "Shorts": self.lower == "shorts", "Skirt&Dress": self.lower in SKIRTS,
            "boots": self.boots,
        }
        return {k: int(v) for k, v in a.items()}

    def attribute_vector(self, view: str | None = None) -> np.ndarray:
        a = self.attributes(view)
        return np.array([a[k] for k in PA100K_ATTRIBUTES], dtype=np.uint8)

    def caption(self) -> str:
        """A sentence describing the person, as image-text datasets (LUPerson-TA) have."""
        she = self.female
        who = {"less18": "girl" if she else "boy",
               "18to30": "young woman" if she else "young man",
               "31to45": "woman" if she else "man",
               "46to60": "woman in her fifties" if she else "man in his fifties",
               "over60": "elderly woman" if she else "elderly man"}[self.age]
        if self.bald:
            person = f"A bald {who}"
        else:
            grey = "grey-streaked " if self.age == "46to60" else ""
            person = (f"A {who} with {'long' if self.long_hair else 'short'} {grey}{self.hair} "
                      f"hair")
        upper = {"tshirt": "T-shirt", "vneck": "V-neck T-shirt", "shirt": "long-sleeved shirt",
                 "sweater": "sweater", "jacket": "zipped jacket", "cotton": "padded cotton jacket",
                 "suit": "suit jacket with a tie", "vest": "sleeveless vest",
                 "tight": "tight long-sleeved top", "coat": "long coat"}[self.upper]
        pattern = {"plain": "", "stride": "striped ", "plaid": "plaid ", "logo": "",
                   "splice": f"{self.upper_colour2}-spliced "}[self.upper_pattern]
        logo = " with a logo" if self.upper_pattern == "logo" else ""
        lower = {"trousers": "suit trousers" if self.upper == "suit" else "trousers",
                 "jeans": "jeans", "tight": "leggings", "shorts": "shorts",
                 "short_skirt": "short skirt", "skirt": "long skirt", "dress": "dress"}[self.lower]
        lpat = {"plain": "", "stripe": "striped ", "pattern": "patterned "}[self.lower_pattern]
        shoes = {"casual": "shoes", "sneaker": "sneakers", "leather": "leather shoes",
                 "cloth": "canvas shoes", "sandal": "sandals", "boots": "boots"}[self.shoes]
        parts = [f"{person} wearing a {pattern}{self.upper_colour} {upper}{logo} and "
                 f"{lpat}{self.lower_colour} {lower}", f"{self.shoe_colour} {shoes}"]
        extras = []
        if self.hat:
            extras.append(f"a {self.hat_colour} hat")
        if self.glasses:
            extras.append("glasses")
        if self.scarf:
            extras.append(f"a {self.scarf_colour} scarf")
        if self.clerk:
            extras.append(f"a {self.apron_colour} apron")
        if self.backpack:
            extras.append(f"a {self.bag_colour} backpack")
        if self.shoulder_bag:
            extras.append(f"a {self.bag_colour} shoulder bag")
        if self.handbag:
            extras.append(f"a {self.bag_colour} handbag")
        if self.holds_object:
            extras.append("a box held in front")
        extras += {"none": [], "plastic_bag": ["a plastic bag"], "paper_bag": ["a paper bag"],
                   "trunk": ["a suitcase pulled behind"], "umbrella": ["a closed umbrella"]
                   }[self.hand_item]
        if self.calling:
            extras.append("a phone to the ear")
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

    def colour(among: tuple[str, ...] | None = None) -> str:
        pool = among or names
        return pool[rng.integers(len(pool))]

    age = AGES[rng.choice(5, p=[0.15, 0.25, 0.25, 0.2, 0.15])]
    female = bool(rng.random() < 0.5)
    upper = UPPER_KINDS[rng.choice(10, p=[0.2, 0.1, 0.14, 0.1, 0.1, 0.07, 0.07, 0.06, 0.06,
                                          0.1])]
    if upper == "suit" and age == "less18":
        upper = "shirt"
    if upper == "suit":  # with suit trousers of the same dark colour and leather shoes
        lower = "trousers"
    else:
        lower = LOWER_KINDS[rng.choice(7, p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1] if female
                                       else [0.45, 0.3, 0.05, 0.2, 0, 0, 0])]
    hair_name, hair_rgb = HAIRS[rng.choice(5, p=[0.35, 0.3, 0.15, 0.1, 0.1] if age != "over60"
                                           else [0.1, 0.1, 0.1, 0.65, 0.05])]
    bald = bool(not female and age in ("31to45", "46to60", "over60") and rng.random() < 0.25)
    upper_colour = colour(("black", "navy", "grey") if upper == "suit" else None)
    upper_colour2 = colour()
    while upper_colour2 == upper_colour:
        upper_colour2 = colour()
    plain = upper in ("suit", "cotton")
    upper_pattern = "plain" if plain else UPPER_PATTERNS[rng.choice(5, p=[0.5, 0.14, 0.12, 0.12,
                                                                           0.12])]
    lower_colour = (upper_colour if upper == "suit" else
                    colour(("blue", "navy")) if lower == "jeans" else colour())
    lower_pattern = ("plain" if upper == "suit" or lower == "jeans" else
                     LOWER_PATTERNS[rng.choice(3, p=[0.7, 0.15, 0.15])])
    shoes = ("leather" if upper == "suit" else
             SHOE_KINDS[rng.choice(6, p=[0.3, 0.2, 0.12, 0.12, 0.08, 0.18])])
    shoe_colour = colour(("black", "brown")) if shoes == "leather" else colour()
    bag = rng.random(3) < (0.18, 0.22, 0.25)
    holds_object = bool(rng.random() < 0.1)
    hand_item = HAND_ITEMS[rng.choice(5, p=[0.7, 0.08, 0.08, 0.07, 0.07])]
    if holds_object and hand_item in ("plastic_bag", "paper_bag"):  # both hands on the box
        hand_item = "none"
    return Identity(
        pid=pid, female=female, age=age,
        height=float({"less18": 0.72, "over60": 0.95}.get(age, 1.0)
                     * rng.uniform(0.92, 1.06) * (0.95 if female else 1.0)),
        build=float(rng.uniform(0.85, 1.2)),
        skin=SKINS[rng.integers(len(SKINS))],
        hair=hair_name, hair_rgb=hair_rgb,
        long_hair=bool(not bald and rng.random() < (0.7 if female else 0.1)), bald=bald,
        upper=upper, upper_colour=upper_colour, upper_pattern=upper_pattern,
        upper_colour2=upper_colour2,
        lower=lower, lower_colour=lower_colour, lower_pattern=lower_pattern,
        shoes=shoes, shoe_colour=shoe_colour,
        hat=bool(rng.random() < 0.2), hat_colour=colour(),
        glasses=bool(rng.random() < 0.2),
        scarf=bool(rng.random() < 0.12), scarf_colour=colour(),
        handbag=bool(bag[0]), shoulder_bag=bool(bag[1]), backpack=bool(bag[2]),
        bag_colour=colour(), holds_object=holds_object, hand_item=hand_item,
        calling=bool(hand_item != "trunk" and not holds_object and rng.random() < 0.1),
        clerk=bool(age in ADULT_AGES and upper != "coat" and rng.random() < 0.12),
        apron_colour=colour(("green", "red", "navy", "brown", "orange")),
    )
