"""Rendering synthetic people: an articulated body, per-pixel LIP part labels, COCO keypoints.

The body is a 3-D stick figure in body-height units (hips at the origin, y down, +x the
person's left, +z the direction they face) posed by a walking phase, or seated or riding,
then turned by the viewpoint's yaw and projected orthographically.  Garments, skin, hair
and accessories are capsules, ellipses and convex polygons painted far-to-near (painter's
algorithm on projected depth) into three maps: the LIP class of each pixel (20 classes,
``LIP_CLASSES``), a material id (what colour and pattern it gets) and the instance mask.
The 17 COCO keypoints come from the same skeleton, with COCO's visibility flags (2 visible,
1 labelled but hidden, 0 not labelled).  A :class:`Camera` supplies the background,
lighting, colour cast, blur and noise, so one identity looks different across cameras.
Everything is vectorised numpy over pixel windows; randomness comes only from the
generator passed in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from bench.data.synth.people import (COLOURS, LONG_LEGGED, SHORT_SLEEVED, SKIRTS, Identity,
                                     colour_rgb)

LIP_CLASSES = (
    "Background", "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes", "Dress", "Coat",
    "Socks", "Pants", "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm",
    "Left-leg", "Right-leg", "Left-shoe", "Right-shoe",
)
L = {name: i for i, name in enumerate(LIP_CLASSES)}
COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
COCO_SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7),
                 (6, 8), (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5),
                 (4, 6), (5, 7))  # 1-based, as in COCO's person category
YAWS = {"front": 0.0, "back": math.pi, "side": math.pi / 2}
POSES = ("walk", "sit", "ride")


# --------------------------------------------------------------------------------------
# Skeleton
# --------------------------------------------------------------------------------------
def skeleton(ident: Identity, pose: str, phase: float) -> dict[str, np.ndarray]:
    """Named 3-D joints (x left, y down, z forward), body height 1, hips at y=0."""
    b = ident.build
    j: dict[str, np.ndarray] = {}
    v = lambda x, y, z: np.array([x, y, z], dtype=np.float64)  # noqa: E731
    j["l_hip"], j["r_hip"] = v(0.085 * b, 0, 0), v(-0.085 * b, 0, 0)
    j["l_shoulder"], j["r_shoulder"] = v(0.115 * b, -0.34, 0), v(-0.115 * b, -0.34, 0)
    j["neck"], j["head"] = v(0, -0.37, 0), v(0, -0.425, 0.005)
    j["nose"] = v(0, -0.425, 0.065)
    j["l_eye"], j["r_eye"] = v(0.024, -0.44, 0.055), v(-0.024, -0.44, 0.055)
    j["l_ear"], j["r_ear"] = v(0.06, -0.432, 0.0), v(-0.06, -0.432, 0.0)
    swing = 0.42 * math.sin(phase)
    thigh, shin, upper, fore = 0.245, 0.235, 0.155, 0.145
    for side, sgn in (("l", 1.0), ("r", -1.0)):
        hip = j[f"{side}_hip"]
        if pose == "walk":
            a = sgn * swing  # forward angle of the thigh
            flex = 0.35 * max(0.0, -sgn * math.sin(phase + 0.6))
            knee = hip + thigh * v(0.01 * sgn, math.cos(a), math.sin(a))
            ankle = knee + shin * v(0, math.cos(a - flex), math.sin(a - flex))
        else:  # sit / ride: thighs forward, shins down (riders' feet a little apart)
            spread = 0.04 if pose == "sit" else 0.07
            knee = hip + thigh * v(spread * sgn, 0.12, 0.99)
            ankle = knee + shin * v(0, 0.98, -0.1 if pose == "sit" else 0.15 * sgn)
        j[f"{side}_knee"], j[f"{side}_ankle"] = knee, ankle
        sh = j[f"{side}_shoulder"]
        arm = -sgn * swing * 0.8 if pose == "walk" else 0.9
        elbow = sh + upper * v(0.12 * sgn, math.cos(arm), math.sin(arm))
        bend = 0.25 if pose == "walk" else 0.5
        wrist = elbow + fore * v(0.05 * sgn, math.cos(arm + bend), math.sin(arm + bend))
        j[f"{side}_elbow"], j[f"{side}_wrist"] = elbow, wrist
    if pose == "walk" and ident.calling:  # the right hand holds a phone to the right ear
        j["r_elbow"] = j["r_shoulder"] + v(-0.05, 0.09, 0.11)
        j["r_wrist"] = j["r_ear"] + v(-0.015, 0.015, 0.02)
    elif pose == "walk" and ident.hand_item == "trunk":  # right arm back, pulling a suitcase
        j["r_elbow"] = j["r_shoulder"] + upper * v(-0.1, 0.93, -0.35)
        j["r_wrist"] = j["r_elbow"] + fore * v(-0.05, 0.85, -0.52)
    return j


def project(p: np.ndarray, yaw: float) -> tuple[float, float, float]:
    """Image x (right), image y (down) and depth (towards the camera) of a joint."""
    c, s = math.cos(yaw), math.sin(yaw)
    return c * p[0] + s * p[2], p[1], -s * p[0] + c * p[2]


# --------------------------------------------------------------------------------------
# Primitives
# --------------------------------------------------------------------------------------
@dataclass
class Prim:
    depth: float
    label: int  # LIP class
    material: str  # key into the person's palette
    kind: str  # capsule | ellipse | poly
    geo: tuple


def _window(shape_hw, x0, y0, x1, y1):
    h, w = shape_hw
    xa, ya = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    xb, yb = min(w, int(math.ceil(x1)) + 1), min(h, int(math.ceil(y1)) + 1)
    if xa >= xb or ya >= yb:
        return None
    ys, xs = np.mgrid[ya:yb, xa:xb].astype(np.float32)
    return (slice(ya, yb), slice(xa, xb)), xs + 0.5, ys + 0.5


def rasterise(prim: Prim, shape_hw) -> tuple[tuple[slice, slice], np.ndarray] | None:
    if prim.kind == "capsule":
        (x0, y0), (x1, y1), r0, r1 = prim.geo
        r = max(r0, r1)
        win = _window(shape_hw, min(x0, x1) - r, min(y0, y1) - r, max(x0, x1) + r, max(y0, y1) + r)
        if win is None:
            return None
        sl, xs, ys = win
        dx, dy = x1 - x0, y1 - y0
        den = dx * dx + dy * dy
        t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / den, 0, 1) if den > 1e-9 else 0 * xs
        d2 = (xs - (x0 + t * dx)) ** 2 + (ys - (y0 + t * dy)) ** 2
        return sl, d2 <= (r0 + t * (r1 - r0)) ** 2
    if prim.kind == "ellipse":
        (cx, cy), rx, ry = prim.geo
        win = _window(shape_hw, cx - rx, cy - ry, cx + rx, cy + ry)
        if win is None:
            return None
        sl, xs, ys = win
        return sl, ((xs - cx) / max(rx, 1e-6)) ** 2 + ((ys - cy) / max(ry, 1e-6)) ** 2 <= 1
    pts = np.asarray(prim.geo[0], dtype=np.float64)
    win = _window(shape_hw, pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
    if win is None:
        return None
    sl, xs, ys = win
    inside = np.ones(xs.shape, dtype=bool)
    n = len(pts)
    for i in range(n):  # convex hull in counter-clockwise order: inside = left of every edge
        (ax, ay), (bx, by) = pts[i], pts[(i + 1) % n]
        inside &= (bx - ax) * (ys - ay) - (by - ay) * (xs - ax) >= 0
    return sl, inside


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (Andrew's monotone chain), counter-clockwise (see rasterise)."""
    pts = sorted(set(map(tuple, np.round(points, 4))))
    if len(pts) < 3:
        return np.array(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    # counter-clockwise in the algebraic sense (every turn has cross > 0), whichever way y
    # points on screen: rasterise's "inside = left of every edge" test is that same sign
    return np.array(lower[:-1] + upper[:-1])


# --------------------------------------------------------------------------------------
# A person
# --------------------------------------------------------------------------------------
@dataclass
class Person:
    """A posed person placed in an image: primitives to paint and keypoints."""

    prims: list[Prim]
    keypoints: np.ndarray  # (17, 3) x, y, v
    palette: dict[str, tuple[int, int, int]]
    view: str


def pose_person(ident: Identity, view: str, pose: str, phase: float, *, foot_x: float,
                foot_y: float, height_px: float, yaw_jitter: float = 0.0) -> Person:
    """Pose ``ident`` so that its feet stand at (foot_x, foot_y) and it is ``height_px`` tall."""
    yaw = YAWS[view] + yaw_jitter
    if view == "side" and ident.pid % 2:  # half the people walk the other way
        yaw = -yaw
    j = skeleton(ident, pose, phase)
    s = height_px * ident.height
    lowest = max(p[1] for p in j.values())
    oy = foot_y - s * (lowest + 0.02)
    pts = {k: project(p, yaw) for k, p in j.items()}
    P = lambda k: (foot_x + s * pts[k][0], oy + s * pts[k][1])  # noqa: E731
    D = lambda k: pts[k][2]  # noqa: E731
    prims: list[Prim] = []

    def cap(a, b, r0, r1, label, mat, dz=0.0):
        prims.append(Prim((D(a) + D(b)) / 2 + dz, label, mat, "capsule",
                          (P(a), P(b), r0 * s, r1 * s)))

    def cap_pts(pa, pb, da, r0, r1, label, mat):
        prims.append(Prim(da, label, mat, "capsule", (pa, pb, r0 * s, r1 * s)))

    def lerp(a, b, t):
        pa, pb = P(a), P(b)
        return (pa[0] + t * (pb[0] - pa[0]), pa[1] + t * (pb[1] - pa[1]))

    def P3(p):
        x, y, _ = project(np.asarray(p, dtype=np.float64), yaw)
        return (foot_x + s * x, oy + s * y)

    def D3(p):
        return project(np.asarray(p, dtype=np.float64), yaw)[2]

    def poly3d(points3d, dz, label, mat):
        proj = np.array([project(p, yaw) for p in points3d])
        xy = np.stack([foot_x + s * proj[:, 0], oy + s * proj[:, 1]], 1)
        prims.append(Prim(float(proj[:, 2].mean()) + dz, label, mat, "poly", (_hull(xy),)))

    b = ident.build
    outer = ident.upper in ("coat", "jacket", "cotton", "suit")  # LIP's Coat class
    top_label = L["Coat"] if outer else L["UpperClothes"]
    if ident.lower == "dress" and not outer:
        top_label = L["Dress"]
    # torso: a box between shoulders and hips, with some thickness (puffy or fitted tops)
    wide = {"cotton": 1.15, "tight": 0.92}.get(ident.upper, 1.0)
    th = 0.06 * b * wide
    torso = [np.array([x, y, z]) for x, y in ((0.125 * b * wide, -0.345),
                                               (-0.125 * b * wide, -0.345),
                                               (0.105 * b * wide, 0.02), (-0.105 * b * wide, 0.02))
             for z in (-th, th)]
    poly3d(torso, 0.0, top_label, "upper")
    cap("neck", "head", 0.03, 0.03, L["Face"], "skin", dz=-0.01)
    # what the front of the top shows (hidden from behind by the torso: painter's order)
    front = th + 0.004
    if ident.upper == "tshirt":  # round neck
        poly3d([np.array([x, y, front]) for x, y in ((0.035, -0.345), (-0.035, -0.345),
                                                       (0.02, -0.315), (-0.02, -0.315))],
               0.0, L["Face"], "skin")
    elif ident.upper in ("vneck", "suit"):  # bare chest / white shirt in a V
        poly3d([np.array([x, y, front]) for x, y in ((0.045, -0.345), (-0.045, -0.345),
                                                       (0.0, -0.25))],
               0.0, L["Face"] if ident.upper == "vneck" else top_label,
               "skin" if ident.upper == "vneck" else "white")
        if ident.upper == "suit":  # and a tie
            cap_pts(P3((0, -0.335, front + 0.002)), P3((0, -0.24, front + 0.002)),
                    D3((0, -0.3, front + 0.003)), 0.011, 0.014, top_label, "tie")
    elif ident.upper == "jacket":  # zip
        cap_pts(P3((0, -0.34, front)), P3((0, 0.0, front)), D3((0, -0.17, front + 0.001)),
                0.007, 0.007, top_label, "upper_dark")
    if ident.upper == "sweater":  # ribbed hem
        poly3d([np.array([x, y, z]) for x, y in ((0.108 * b, -0.02), (-0.108 * b, -0.02),
                                                  (0.108 * b, 0.025), (-0.108 * b, 0.025))
                for z in (-th - 0.003, th + 0.003)], 0.001, top_label, "upper_dark")
    if ident.clerk:  # apron: a panel on the front, its band round the waist
        poly3d([np.array([x, y, front + 0.004]) for x, y in ((0.085 * b, -0.2), (-0.085 * b, -0.2),
                                                               (0.09 * b, 0.2), (-0.09 * b, 0.2))],
               0.0, L["UpperClothes"], "apron")
        band = 0.11 * b * wide
        poly3d([np.array([x, y, z]) for x in (band, -band) for y in (-0.07, -0.045)
                for z in (-th - 0.006, th + 0.006)], 0.002, L["UpperClothes"], "apron")
    # legs, lower garments, shoes
    lower_lab = L["Pants"]
    thin = 0.82 if ident.lower == "tight" else 1.0
    for side, leg, shoe in (("l", L["Left-leg"], L["Left-shoe"]), ("r", L["Right-leg"], L["Right-shoe"])):
        hip, knee, ankle = f"{side}_hip", f"{side}_knee", f"{side}_ankle"
        if ident.lower in LONG_LEGGED:
            cap(hip, knee, 0.055 * thin, 0.045 * thin, lower_lab, "lower")
            cap(knee, ankle, 0.045 * thin, 0.038 * thin, lower_lab, "lower")
        else:
            cap(hip, knee, 0.05, 0.042, leg, "skin")
            cap(knee, ankle, 0.04, 0.032, leg, "skin")
            if ident.lower == "shorts":
                cap_pts(P(hip), lerp(hip, knee, 0.6), (D(hip) + D(knee)) / 2 + 0.001,
                        0.058, 0.052, lower_lab, "lower")
        tx, ty, tz = project(np.array(j[ankle]) + np.array([0, 0.015, 0.06]), yaw)
        toe = (foot_x + s * tx, oy + s * ty)
        dfoot = (D(ankle) + tz) / 2 + 0.002
        if ident.shoes == "sandal":  # bare foot, one strap across it
            cap_pts(P(ankle), toe, dfoot, 0.03, 0.027, shoe, "skin")
            mid = ((P(ankle)[0] + toe[0]) / 2, (P(ankle)[1] + toe[1]) / 2)
            prims.append(Prim(dfoot + 0.001, shoe, "shoes", "ellipse", (mid, 0.022 * s, 0.014 * s)))
            continue
        top = lerp(knee, ankle, 0.55 if ident.boots else 0.92)
        cap_pts(top, P(ankle), D(ankle) + 0.002, 0.038, 0.036, shoe, "shoes")
        cap_pts(P(ankle), toe, dfoot, 0.034, 0.03, shoe, "shoes")
        if ident.shoes == "sneaker":  # white sole
            down = 0.024 * s
            cap_pts((P(ankle)[0], P(ankle)[1] + down), (toe[0], toe[1] + down), dfoot + 0.001,
                    0.012, 0.012, shoe, "white")
        elif ident.shoes == "cloth":  # white toe cap
            prims.append(Prim(dfoot + 0.001, shoe, "white", "ellipse", (toe, 0.022 * s, 0.02 * s)))
        elif ident.shoes == "leather":  # shine on the toe
            prims.append(Prim(dfoot + 0.001, shoe, "shine", "ellipse", (toe, 0.01 * s, 0.008 * s)))
    if ident.lower in SKIRTS:
        hem, flare = {"short_skirt": (0.11, 1.35), "skirt": (0.33, 1.5),
                      "dress": (0.2, 1.45)}[ident.lower]
        skirt = [np.array([x, y, z]) for x, y in ((0.1 * b, -0.02), (-0.1 * b, -0.02),
                                                   (0.1 * b * flare, hem), (-0.1 * b * flare, hem))
                 for z in (-0.07, 0.07)]
        dress = ident.lower == "dress"
        poly3d(skirt, 0.02, top_label if dress else L["Skirt"], "upper" if dress else "lower")
    if ident.upper == "coat":
        coat = [np.array([x, y, z]) for x, y in ((0.1 * b, -0.02), (-0.1 * b, -0.02),
                                                  (0.125 * b, 0.24), (-0.125 * b, 0.24))
                for z in (-0.075, 0.075)]
        poly3d(coat, 0.021, L["Coat"], "upper")
    # arms: sleeves by kind of top (none for a vest), a sweater's cuffs
    sleeve = top_label
    fat = {"cotton": 1.2, "tight": 0.82}.get(ident.upper, 1.0)
    for side, arm in (("l", L["Left-arm"]), ("r", L["Right-arm"])):
        sh, el, wr = f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist"
        if ident.upper in SHORT_SLEEVED or ident.upper == "vest":
            cap(sh, el, 0.036, 0.03, arm, "skin", dz=0.001)
            if ident.upper != "vest":
                cap_pts(P(sh), lerp(sh, el, 0.45), (D(sh) + D(el)) / 2 + 0.002, 0.045, 0.04,
                        sleeve, "upper")
            cap(el, wr, 0.03, 0.026, arm, "skin", dz=0.001)
        else:
            cap(sh, el, 0.042 * fat, 0.036 * fat, sleeve, "upper", dz=0.001)
            cap(el, wr, 0.036 * fat, 0.032 * fat, sleeve, "upper", dz=0.001)
            if ident.upper == "sweater":
                cap_pts(lerp(el, wr, 0.8), P(wr), D(wr) + 0.002, 0.037, 0.035, sleeve,
                        "upper_dark")
        prims.append(Prim(D(wr) + 0.003, arm, "skin", "ellipse", (P(wr), 0.028 * s, 0.03 * s)))
    # head, hair (receding from 31, none when bald), hat, glasses, scarf
    hx, hy = P("head")
    prims.append(Prim(D("head"), L["Face"], "skin", "ellipse", ((hx, hy), 0.058 * s, 0.068 * s)))
    hair_dz = 0.2 if view == "back" else -0.05
    older = ident.age in ("31to45", "46to60", "over60")
    if not ident.bald:
        prims.append(Prim(D("head") + hair_dz, L["Hair"], "hair", "ellipse",
                          ((hx, hy - (0.032 if older else 0.022) * s), 0.064 * s,
                           (0.05 if older else 0.058) * s)))
    if ident.long_hair:
        back = np.array(j["head"]) + np.array([0, 0.0, -0.04])
        low = np.array(j["neck"]) + np.array([0, 0.1, -0.05])
        pa, pb = project(back, yaw), project(low, yaw)
        prims.append(Prim((pa[2] + pb[2]) / 2 + (0.25 if view == "back" else -0.1), L["Hair"],
                          "hair", "capsule", ((foot_x + s * pa[0], oy + s * pa[1]),
                                              (foot_x + s * pb[0], oy + s * pb[1]),
                                              0.06 * s, 0.055 * s)))
    if ident.hat:
        prims.append(Prim(D("head") + 0.3, L["Hat"], "hat", "ellipse",
                          ((hx, hy - 0.045 * s), 0.07 * s, 0.04 * s)))
    if ident.glasses and view != "back":
        prims.append(Prim(D("l_eye") + 0.1, L["Sunglasses"], "glasses", "capsule",
                          (P("l_eye"), P("r_eye"), 0.016 * s, 0.016 * s)))
    if ident.scarf:  # wound round the neck, one end hanging down the front
        cap_pts(P3((0.075, -0.352, 0.0)), P3((-0.075, -0.352, 0.0)), D("neck") + 0.3,
                0.03, 0.03, L["Scarf"], "scarf")
        cap_pts(P3((0.035, -0.35, 0.075)), P3((0.045, -0.22, 0.075)), D3((0.04, -0.3, 0.075)),
                0.02, 0.022, L["Scarf"], "scarf")
    # accessories (LIP has no class for them: background label, but part of the person)
    if ident.backpack:
        pack = [np.array([x, y, z]) for x, y in ((0.09 * b, -0.33), (-0.09 * b, -0.33),
                                                  (0.08 * b, -0.08), (-0.08 * b, -0.08))
                for z in (-0.07, -0.16)]
        poly3d(pack, 0.0, L["Background"], "bag")
    if ident.shoulder_bag:
        bag = np.array(j["r_hip"]) + np.array([-0.07 * b, -0.05, 0.02])
        bp = project(bag, yaw)
        prims.append(Prim(bp[2] + 0.08, L["Background"], "bag", "ellipse",
                          ((foot_x + s * bp[0], oy + s * bp[1]), 0.05 * s, 0.045 * s)))
        cap_pts(P("l_shoulder"), (foot_x + s * bp[0], oy + s * bp[1]), bp[2] + 0.07,
                0.01, 0.01, L["Background"], "bag")
    if ident.handbag:
        hb = np.array(j["l_wrist"]) + np.array([0.0, 0.06, 0.0])
        hp = project(hb, yaw)
        prims.append(Prim(hp[2] + 0.01, L["Background"], "bag", "ellipse",
                          ((foot_x + s * hp[0], oy + s * hp[1]), 0.04 * s, 0.035 * s)))
    if ident.holds_object:
        box = [np.array([x, y, z]) for x, y in ((0.07, -0.22), (-0.07, -0.22), (0.07, -0.08),
                                                 (-0.07, -0.08)) for z in (0.08, 0.14)]
        poly3d(box, 0.0, L["Background"], "object")
    wr = np.array(j["r_wrist"])
    item = ident.hand_item if pose == "walk" else "none"  # seated people and riders put it down
    if item == "plastic_bag":  # white, hanging from the right hand
        prims.append(Prim(D("r_wrist") + 0.012, L["Background"], "plastic", "ellipse",
                          (P3(wr + np.array([0, 0.075, 0])), 0.05 * s, 0.065 * s)))
    elif item == "paper_bag":  # brown and square, hanging from the right hand
        poly3d([wr + np.array([x, y, z]) for x in (-0.045, 0.045) for y in (0.02, 0.15)
                for z in (-0.03, 0.03)], 0.012, L["Background"], "paper")
    elif item == "trunk":  # a suitcase on the floor behind, pulled by its handle
        foot = max(j["l_ankle"][1], j["r_ankle"][1]) + 0.03
        case = [np.array([x, y, z]) for x in (-0.2, -0.12) for y in (foot - 0.2, foot)
                for z in (-0.34, -0.2)]
        poly3d(case, 0.0, L["Background"], "case")
        cap_pts(P("r_wrist"), P3((-0.16, foot - 0.2, -0.27)), D3((-0.16, foot - 0.2, -0.27)),
                0.008, 0.008, L["Background"], "case")
    elif item == "umbrella":  # closed, its tip on the floor
        foot = max(j["l_ankle"][1], j["r_ankle"][1]) + 0.03
        cap_pts(P("r_wrist"), P3(wr * np.array([1, 0, 1]) + np.array([0, foot, 0.06])),
                D("r_wrist") + 0.01, 0.014, 0.01, L["Background"], "umbrella")
    if ident.calling and pose == "walk":  # the phone in the right hand at the ear
        prims.append(Prim(D("r_wrist") + 0.01, L["Background"], "phone", "ellipse",
                          (P("r_wrist"), 0.014 * s, 0.026 * s)))
    prims.sort(key=lambda p: p.depth)

    # keypoints with COCO visibility
    names = ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow",
             "r_elbow", "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle",
             "r_ankle")
    kp = np.zeros((17, 3), dtype=np.float64)
    for i, n in enumerate(names):
        x, y = P(n)
        vis = 2
        depth = D(n)
        if n in ("nose", "l_eye", "r_eye") and view == "back":
            vis = 0
        elif view == "side" and n[:2] in ("l_", "r_") and depth < -0.02:
            vis = 0 if n.endswith(("eye", "ear")) else 1  # far side: hidden by the body
        kp[i] = (x, y, vis)
    palette = {
        "skin": ident.skin, "hair": ident.hair_rgb, "upper": colour_rgb(ident.upper_colour),
        "upper2": colour_rgb(ident.upper_colour2), "lower": colour_rgb(ident.lower_colour),
        "shoes": colour_rgb(ident.shoe_colour), "hat": colour_rgb(ident.hat_colour),
        "glasses": (15, 15, 15), "bag": colour_rgb(ident.bag_colour), "object": (150, 110, 60),
        "bike": (60, 60, 60), "white": (238, 238, 235), "tie": (150, 20, 30),
        "upper_dark": tuple(int(c * 0.55) for c in colour_rgb(ident.upper_colour)),
        "scarf": colour_rgb(ident.scarf_colour), "apron": colour_rgb(ident.apron_colour),
        "plastic": (228, 228, 220), "paper": (176, 134, 84), "case": colour_rgb(ident.bag_colour),
        "umbrella": (30, 30, 45), "phone": (20, 20, 25),
        "shine": (235, 235, 235),
    }
    return Person(prims, kp, palette, view)


# --------------------------------------------------------------------------------------
# Cameras and canvases
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Camera:
    cam: int
    wall: tuple[int, int, int]
    floor: tuple[int, int, int]
    horizon: float  # fraction of the height where floor meets wall
    gain: float
    cast: tuple[float, float, float]
    blur: float
    noise: float
    view_p: tuple[float, float, float]  # P(front), P(side), P(back)

    @staticmethod
    def make(seed: int, cam: int) -> "Camera":
        rng = np.random.default_rng([seed, 2, cam])
        base = [c for _, c in COLOURS]
        wall = tuple(int(v) for v in (np.array(base[rng.integers(len(base))]) * 0.5 + 90))
        floor = tuple(int(v) for v in (np.array(base[rng.integers(len(base))]) * 0.35 + 70))
        p = rng.dirichlet([3, 2, 3])
        return Camera(cam, wall, floor, float(rng.uniform(0.45, 0.75)),
                      float(rng.uniform(0.75, 1.2)), tuple(rng.uniform(0.88, 1.12, 3).tolist()),
                      float(rng.uniform(0.0, 0.8)), float(rng.uniform(2.0, 7.0)), tuple(p.tolist()))

    def view(self, rng: np.random.Generator) -> str:
        return ("front", "side", "back")[rng.choice(3, p=self.view_p)]


def background(cam: Camera, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Wall above a horizon, floor below, a few coloured blocks, a vertical light gradient."""
    img = np.empty((h, w, 3), dtype=np.float32)
    hz = int(cam.horizon * h)
    img[:hz] = cam.wall
    img[hz:] = cam.floor
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, max(1, hz)))
        bw, bh = int(rng.integers(w // 8 + 1, w // 2 + 2)), int(rng.integers(h // 10 + 1, h // 3 + 2))
        img[y0:y0 + bh, x0:x0 + bw] = rng.uniform(40, 220, 3)
    img *= np.linspace(1.08, 0.9, h, dtype=np.float32)[:, None, None]
    return img


def paint(canvas: np.ndarray, labels: np.ndarray, inst: np.ndarray, person: Person,
          inst_id: int, rng: np.random.Generator, ident: Identity) -> None:
    """Paint ``person`` onto the float RGB ``canvas``, its LIP labels and instance ids."""
    h, w = labels.shape
    pal = {k: np.array(v, dtype=np.float32) for k, v in person.palette.items()}
    for prim in person.prims:
        r = rasterise(prim, (h, w))
        if r is None:
            continue
        sl, m = r
        if not m.any():
            continue
        region = canvas[sl]
        colour = np.broadcast_to(pal[prim.material], region.shape).copy()
        ys, xs = np.mgrid[sl]
        if prim.material == "upper":
            colour = _pattern(colour, ident.upper_pattern, xs, ys, pal["upper2"], person, h)
            if ident.upper == "cotton":  # quilted: a darker seam every few rows
                colour[(ys // max(2, h // 40)) % 3 == 0] *= 0.7
        elif prim.material == "lower":
            colour = _lower_pattern(colour, ident.lower_pattern, xs, ys, pal["upper2"] * 0.5)
            if ident.lower == "jeans":  # faded at the knees
                knee_y = person.keypoints[13:15, 1].mean()
                colour[np.abs(ys + 0.5 - knee_y) <= max(1.5, 0.025 * h)] *= 1.45
        elif prim.material == "hair" and ident.age == "46to60":  # grey streaks
            colour[(xs // 2) % 2 == 0] = (150, 150, 150)
        region[m] = colour[m]
        if prim.material == "bike":  # ridden, not worn: not part of the person
            continue
        labels[sl][m] = prim.label
        inst[sl][m] = inst_id


def _pattern(colour, kind, xs, ys, c2, person, h):
    scale = max(2, h // 40)
    if kind == "stride":
        sel = (ys // scale) % 2 == 0
    elif kind == "plaid":
        sel = ((ys // (2 * scale)) % 2 == 0) ^ ((xs // (2 * scale)) % 2 == 0)
    elif kind == "logo":
        sh = person.keypoints[5:7, :2].mean(0)
        hip = person.keypoints[11:13, :2].mean(0)
        cx, cy = (sh * 0.6 + hip * 0.4)
        size = max(1.5, abs(hip[1] - sh[1]) * 0.18)
        sel = (np.abs(xs + 0.5 - cx) <= size) & (np.abs(ys + 0.5 - cy) <= size)
    elif kind == "splice":
        sel = xs + 0.5 < person.keypoints[5:7, 0].mean()
    else:
        return colour
    colour[sel] = c2
    return colour


def _lower_pattern(colour, kind, xs, ys, c2):
    if kind == "stripe":
        colour[(xs // 2) % 2 == 0] = c2
    elif kind == "pattern":
        colour[((xs // 3) + (ys // 3)) % 3 == 0] = c2
    return colour


def finish(canvas: np.ndarray, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """Camera response: gain, colour cast, blur, sensor noise -> uint8 RGB."""
    img = canvas * (cam.gain * np.array(cam.cast, dtype=np.float32))
    img += rng.normal(0.0, cam.noise, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if cam.blur > 0.3:
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(cam.blur)))
    return out


# --------------------------------------------------------------------------------------
# Crops and scenes
# --------------------------------------------------------------------------------------
@dataclass
class Crop:
    image: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) uint8, LIP classes
    keypoints: np.ndarray  # (17, 3)
    view: str


def render_crop(ident: Identity, cam: Camera, h: int, w: int, rng: np.random.Generator,
                view: str | None = None) -> Crop:
    """A pedestrian crop (re-ID, attributes, parsing, pretraining pools): one person, filling it."""
    view = view or cam.view(rng)
    canvas = background(cam, h, w, rng)
    labels = np.zeros((h, w), np.uint8)
    inst = np.zeros((h, w), np.int16)
    fill = rng.uniform(0.86, 0.98) / max(ident.height, 0.8)
    person = pose_person(ident, view, "walk", float(rng.uniform(0, 2 * math.pi)),
                         foot_x=w / 2 + rng.uniform(-0.06, 0.06) * w,
                         foot_y=h * rng.uniform(0.96, 1.0), height_px=h * fill,
                         yaw_jitter=float(rng.uniform(-0.3, 0.3)))
    paint(canvas, labels, inst, person, 1, rng, ident)
    kp = person.keypoints.copy()
    outside = (kp[:, 0] < 0) | (kp[:, 0] >= w) | (kp[:, 1] < 0) | (kp[:, 1] >= h)
    kp[outside, 2] = 0
    return Crop(finish(canvas, cam, rng), labels, kp, view)


@dataclass
class Instance:
    pid: int
    kind: str  # pedestrian | rider | sitting
    box: tuple[float, float, float, float]  # full extent x, y, w, h (occluded parts too)
    vis_box: tuple[float, float, float, float]  # visible pixels' extent (0s if none)
    visibility: float  # visible / full mask pixels
    area: int  # visible pixels
    keypoints: np.ndarray  # (17, 3) with v=1 where occluded by someone nearer
    view: str


@dataclass
class Scene:
    image: np.ndarray
    labels: np.ndarray  # LIP classes of the visible person pixels
    instances_map: np.ndarray  # (H, W) int16: 0 background, i+1 for instances[i]
    instances: list[Instance]


def render_scene(idents: list[Identity], cam: Camera, h: int, w: int,
                 rng: np.random.Generator, kinds: list[str] | None = None,
                 min_height: float = 0.15, max_height: float = 0.7) -> Scene:
    """Several people on a floor: farther ones higher up and smaller, nearer ones on top.

    Each instance's full box comes from its own mask painted alone; its visible box and
    visibility from what is left after everyone nearer has been painted over it.
    """
    canvas = background(cam, h, w, rng)
    labels = np.zeros((h, w), np.uint8)
    inst = np.zeros((h, w), np.int16)
    kinds = kinds or ["pedestrian"] * len(idents)
    hz = cam.horizon * h
    placed = []
    for ident, kind in zip(idents, kinds):
        depth = rng.uniform(0, 1)  # 0 far, 1 near
        foot_y = hz + (h - hz) * (0.15 + 0.85 * depth)
        height = h * (min_height + (max_height - min_height) * depth)
        foot_x = rng.uniform(0.05, 0.95) * w
        placed.append((depth, ident, kind, foot_x, foot_y, height))
    placed.sort(key=lambda t: t[0])
    people, full_counts, full_boxes = [], [], []
    for depth, ident, kind, foot_x, foot_y, height in placed:
        pose = {"pedestrian": "walk", "rider": "ride", "sitting": "sit"}[kind]
        view = cam.view(rng)
        if kind == "rider":
            view = "side"
        if kind == "sitting":
            height *= 0.75
        person = pose_person(ident, view, pose, float(rng.uniform(0, 2 * math.pi)),
                             foot_x=foot_x, foot_y=foot_y, height_px=height)
        if kind == "rider":
            _add_bicycle(person, foot_x, foot_y, height)
        alone = np.zeros((h, w), np.int16)
        paint(np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.uint8), alone, person, 1,
              rng, ident)
        full_counts.append(int((alone > 0).sum()))
        full_boxes.append(_box(alone > 0))
        people.append((ident, kind, person))
    for i, (ident, kind, person) in enumerate(people):
        paint(canvas, labels, inst, person, i + 1, rng, ident)
    instances = []
    for i, (ident, kind, person) in enumerate(people):
        vis = inst == i + 1
        n = int(vis.sum())
        kp = person.keypoints.copy()
        for k in range(17):
            if not (0 <= kp[k, 0] < w and 0 <= kp[k, 1] < h):  # int() truncates -0.5 to 0
                kp[k, 2] = 0
            elif kp[k, 2] == 2 and inst[int(kp[k, 1]), int(kp[k, 0])] > i + 1:
                kp[k, 2] = 1  # hidden by a nearer person
        instances.append(Instance(ident.pid, kind, full_boxes[i], _box(vis),
                                  n / max(full_counts[i], 1), n, kp, person.view))
    # people not in the image at all keep a box of zeros and visibility 0
    return Scene(finish(canvas, cam, rng), labels, inst, instances)


def _add_bicycle(person: Person, foot_x: float, foot_y: float, height: float) -> None:
    r = 0.17 * height
    for dx in (-0.28, 0.28):
        person.prims.insert(0, Prim(-1.0, L["Background"], "bike", "ellipse",
                                    ((foot_x + dx * height, foot_y - r), r, r)))
    person.prims.insert(0, Prim(-1.0, L["Background"], "bike", "capsule",
                                ((foot_x - 0.28 * height, foot_y - r),
                                 (foot_x + 0.28 * height, foot_y - r), 0.02 * height,
                                 0.02 * height)))


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    x0, y0 = float(xs.min()), float(ys.min())
    return (x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0)
