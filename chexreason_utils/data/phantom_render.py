"""Rendering of phantom chest radiographs: anatomy, one drawing per finding, site acquisition.

Intensities follow radiographic convention (dense = bright): lungs dark, bone, heart, fluid and devices
bright. Coordinates are fractions of the image (x right, y down); the patient's right is the image's left.
Each finding drawer returns a short description of what it drew, which the world records so a template
teacher can write a rationale from what is actually in the image. This is a controlled world, not medicine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIDES = {"right": 0.32, "left": 0.68}   # lung centres (patient's right lung is on the image's left)


@dataclass(frozen=True)
class SiteStyle:
    """How a site acquires and stores images; every field is recorded in the world card."""

    name: str
    gamma: float
    contrast: float
    brightness: float
    noise: float
    magnification: float
    blur: int
    border: int
    marker: str          # top-left | top-right | bottom-left | none


class Canvas:
    """One image under construction, with the patient's anatomy parameters."""

    def __init__(self, size: int, rng: np.random.Generator, magnification: float):
        self.size, self.rng = size, rng
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
        self.x = (x - 0.5) / magnification + 0.5 + rng.normal(0, 0.008)
        self.y = (y - 0.5) / magnification + 0.5 + rng.normal(0, 0.008)
        self.img = np.full((size, size), 0.04, dtype=np.float32)
        self.heart_rx = 0.125 + rng.normal(0, 0.008)
        self.mediastinum_w = 0.06 + rng.normal(0, 0.004)
        self.lung_scale = 1.0
        self.dome = {"right": 0.74 + rng.normal(0, 0.008), "left": 0.76 + rng.normal(0, 0.008)}
        self.atelectasis_side = "right"

    def ellipse(self, cx, cy, rx, ry) -> np.ndarray:
        return ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2 <= 1.0

    def blob(self, cx, cy, sigma) -> np.ndarray:
        return np.exp(-(((self.x - cx) ** 2 + (self.y - cy) ** 2) / (2 * sigma ** 2)))

    def lung(self, side: str) -> np.ndarray:
        cx = SIDES[side]
        s = self.lung_scale
        return self.ellipse(cx, 0.45, 0.15 * s, 0.31 * s) & (self.y < self.dome[side] - 0.06 * (self.x - cx) ** 2 * 10)

    def lungs(self) -> np.ndarray:
        return self.lung("right") | self.lung("left")


def smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Low-frequency texture: coarse noise upsampled (vessel markings, patchy opacities)."""
    coarse = rng.standard_normal((scale, scale)).astype(np.float32)
    reps = int(np.ceil(size / scale))
    up = np.kron(coarse, np.ones((reps, reps), dtype=np.float32))[:size, :size]
    k = np.ones(reps, dtype=np.float32) / reps
    up = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 0, up)
    return np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, up)


def draw_anatomy(c: Canvas) -> None:
    body = c.ellipse(0.5, 0.56, 0.46, 0.5)
    c.img[body] = 0.42
    lungs = c.lungs()
    markings = smooth_noise(c.rng, c.size, 24) * 0.035
    c.img[lungs] = 0.14 + markings[lungs]
    c.img += 0.22 * (np.abs(c.x - 0.5) < 0.035) * (c.y > 0.12)                            # spine
    for k in range(9):                                                                         # ribs
        for side, cx in SIDES.items():
            yk = 0.2 + 0.062 * k + 0.25 * (c.x - cx) ** 2 * (1 if side == "left" else 1)
            band = (np.abs(c.y - yk) < 0.009) & (np.abs(c.x - cx) < 0.17)
            c.img[band] += 0.07


def draw_mediastinum(c: Canvas) -> None:
    c.img += 0.3 * (np.abs(c.x - 0.5) < c.mediastinum_w) * (c.y > 0.12) * (c.y < 0.52)
    heart = c.ellipse(0.54, 0.63, c.heart_rx, 0.12)
    c.img[heart] = np.maximum(c.img[heart], 0.62)


# ---- findings: each draws itself and returns a description --------------------------------------------

def cardiomegaly_geometry(c: Canvas) -> None:
    c.heart_rx = 0.19 + c.rng.uniform(0, 0.03)


def cardiomegaly(c: Canvas) -> str:
    return f"enlarged cardiac silhouette, cardiothoracic ratio about {2 * c.heart_rx / 0.62:.2f}"


def enlarged_cardiomediastinum_geometry(c: Canvas) -> None:
    c.mediastinum_w = 0.11 + c.rng.uniform(0, 0.02)


def enlarged_cardiomediastinum(c: Canvas) -> str:
    return f"widened superior mediastinum, about {2 * c.mediastinum_w:.2f} of the image width"


def edema(c: Canvas) -> str:
    lungs = c.lungs()
    haze = 0.16 * (c.blob(0.38, 0.5, 0.11) + c.blob(0.62, 0.5, 0.11))
    c.img += haze * lungs
    for side, cx in SIDES.items():
        for k in range(4):
            y0 = 0.58 + 0.025 * k
            x0 = cx - 0.13 if side == "right" else cx + 0.08
            c.img += 0.12 * ((np.abs(c.y - y0) < 0.004) & (c.x > x0) & (c.x < x0 + 0.05)) * lungs
    return "bilateral perihilar haziness with basal septal lines"


def consolidation(c: Canvas) -> str:
    side = c.rng.choice(list(SIDES))
    lung = c.lung(side)
    region = lung & (c.y > 0.45 + c.rng.uniform(-0.05, 0.05))
    c.img[region] += 0.3
    bronchi = (np.abs(np.sin((c.x - SIDES[side]) * 60 + c.y * 12)) < 0.12) & region
    c.img[bronchi] -= 0.15
    return f"dense {side} lower-zone consolidation with air bronchograms"


def pneumonia(c: Canvas) -> str:
    side = c.rng.choice(list(SIDES))
    lung = c.lung(side)
    cy = c.rng.uniform(0.35, 0.6)
    patches = sum(c.blob(SIDES[side] + c.rng.normal(0, 0.04), cy + c.rng.normal(0, 0.04), 0.035) for _ in range(4))
    c.img += 0.22 * np.clip(patches, 0, 1) * lung
    zone = "mid" if cy < 0.5 else "lower"
    return f"patchy airspace opacity in the {side} {zone} zone"


def atelectasis_geometry(c: Canvas) -> None:
    c.atelectasis_side = str(c.rng.choice(list(SIDES)))
    c.dome[c.atelectasis_side] -= 0.05


def atelectasis(c: Canvas) -> str:
    side = c.atelectasis_side
    lung = c.lung(side)
    y0 = c.dome[side] - 0.1
    band = (np.abs(c.y - y0 - 0.15 * (c.x - SIDES[side])) < 0.014) & lung
    c.img[band] += 0.32
    return f"plate-like band at the {side} base with elevation of the {side} hemidiaphragm"


def lung_opacity(c: Canvas) -> str:
    side = c.rng.choice(list(SIDES))
    cy = c.rng.uniform(0.3, 0.6)
    c.img += 0.15 * c.blob(SIDES[side], cy, 0.07) * c.lung(side)
    return f"ill-defined opacity in the {side} lung"


def lesion(c: Canvas, radius: float, what: str) -> str:
    side = c.rng.choice(list(SIDES))
    cx, cy = SIDES[side] + c.rng.uniform(-0.06, 0.06), c.rng.uniform(0.3, 0.55)
    c.img[c.ellipse(cx, cy, radius, radius)] += 0.34
    return f"{what} about {radius * 2 * 35:.0f} mm in the {side} {'upper' if cy < 0.42 else 'mid'} zone"


def lung_lesion(c: Canvas) -> str:
    return lesion(c, c.rng.uniform(0.03, 0.045), "round well-defined lesion")


def mass(c: Canvas) -> str:
    return lesion(c, c.rng.uniform(0.055, 0.075), "mass")


def nodule(c: Canvas) -> str:
    return lesion(c, c.rng.uniform(0.018, 0.026), "small nodule")


def pleural_effusion(c: Canvas) -> str:
    sides = [s for s in SIDES if c.rng.random() < 0.6] or [c.rng.choice(list(SIDES))]
    height = c.rng.uniform(0.12, 0.22)
    for side in sides:
        lung = c.lung(side)
        lateral = np.abs(c.x - SIDES[side]) / 0.15
        fluid = lung & (c.y > c.dome[side] - height - 0.06 * lateral)
        c.img[fluid] = 0.58
    where = "bilateral" if len(sides) == 2 else f"{sides[0]}-sided"
    return f"{where} basal meniscus blunting the costophrenic angle, about {height:.0%} of lung height"


def pleural_other(c: Canvas) -> str:
    side = c.rng.choice(list(SIDES))
    cx = SIDES[side]
    edge = c.ellipse(cx, 0.45, 0.15, 0.31) & ~c.ellipse(cx, 0.45, 0.125, 0.29)
    outer = (c.x < cx) if side == "right" else (c.x > cx)
    c.img[edge & outer & (c.y < c.dome[side])] += 0.28
    return f"{side} lateral pleural thickening"


def pneumothorax(c: Canvas) -> str:
    side = c.rng.choice(list(SIDES))
    cx = SIDES[side]
    lung = c.lung(side)
    inner_x = cx - 0.06 if side == "right" else cx + 0.06
    beyond = lung & ((c.x < inner_x) if side == "right" else (c.x > inner_x)) & (c.y < 0.5)
    c.img[beyond] = 0.06
    line = lung & (np.abs(c.x - inner_x) < 0.005) & (c.y < 0.5)
    c.img[line] = 0.5
    return f"{side} apical pleural line with absent lung markings beyond it"


def fracture(c: Canvas) -> str:
    side = c.rng.choice(list(SIDES))
    cx = SIDES[side]
    k = int(c.rng.integers(2, 7))
    yk = 0.2 + 0.062 * k + 0.25 * (0.13) ** 2
    xs = cx - 0.13 if side == "right" else cx + 0.13
    gap = (np.abs(c.x - xs) < 0.02) & (np.abs(c.y - yk) < 0.014)
    c.img[gap] -= 0.1
    callus = c.ellipse(xs, yk + 0.012, 0.028, 0.014)
    c.img[callus] += 0.3
    return f"step deformity of the {side} rib {k + 3} laterally"


def support_devices(c: Canvas) -> str:
    drawn = []
    if c.rng.random() < 0.8:
        c.img[(np.abs(c.x - 0.5 - 0.02 * np.sin(c.y * 8)) < 0.006) & (c.y < 0.36)] = 0.95
        drawn.append("endotracheal tube")
    if c.rng.random() < 0.6:
        c.img[(np.abs(c.x - 0.52 - 0.03 * c.y) < 0.005) & (c.y < 0.86)] = 0.9
        drawn.append("enteric tube")
    if c.rng.random() < 0.5 or not drawn:
        for _ in range(3):
            c.img[c.ellipse(c.rng.uniform(0.15, 0.85), c.rng.uniform(0.12, 0.3), 0.018, 0.018)] = 0.95
        drawn.append("ECG leads")
    return ", ".join(drawn) + " in place"


def infiltration(c: Canvas) -> str:
    lungs = c.lungs()
    tex = np.clip(smooth_noise(c.rng, c.size, 10), 0, None)
    c.img += 0.1 * tex * lungs
    return "ill-defined patchy infiltrates"


def emphysema_geometry(c: Canvas) -> None:
    c.lung_scale = 1.1
    c.dome = {k: v + 0.05 for k, v in c.dome.items()}


def emphysema(c: Canvas) -> str:
    return "hyperinflated lucent lungs with flattened hemidiaphragms"


def fibrosis(c: Canvas) -> str:
    lungs = c.lungs()
    net = (np.abs(np.sin(c.x * 90)) < 0.15) | (np.abs(np.sin(c.y * 90)) < 0.15)
    periph = np.minimum(np.abs(c.x - 0.32), np.abs(c.x - 0.68)) > 0.07
    c.img[net & lungs & periph & (c.y > 0.45)] += 0.14
    return "peripheral basal reticulation"


def hernia(c: Canvas) -> str:
    c.img[c.ellipse(0.55, 0.68, 0.06, 0.05)] += 0.2
    c.img[c.ellipse(0.55, 0.66, 0.045, 0.02) & (c.y < 0.665)] = 0.1
    return "retrocardiac mass with an air-fluid level"


# Geometry changes (heart, mediastinum, lungs, domes) happen before the anatomy is drawn.
GEOMETRY = {"Cardiomegaly": cardiomegaly_geometry, "Enlarged Cardiomediastinum": enlarged_cardiomediastinum_geometry,
            "Emphysema": emphysema_geometry, "Atelectasis": atelectasis_geometry}
DRAWERS = {
    "Cardiomegaly": cardiomegaly, "Enlarged Cardiomediastinum": enlarged_cardiomediastinum,
    "Emphysema": emphysema, "Atelectasis": atelectasis,
    "Edema": edema, "Consolidation": consolidation, "Pneumonia": pneumonia, "Lung Opacity": lung_opacity,
    "Infiltration": infiltration, "Fibrosis": fibrosis, "Lung Lesion": lung_lesion, "Mass": mass,
    "Nodule": nodule, "Pleural Effusion": pleural_effusion, "Effusion": pleural_effusion,
    "Pleural Other": pleural_other, "Pleural_Thickening": pleural_other, "Pneumothorax": pneumothorax,
    "Fracture": fracture, "Hernia": hernia, "Support Devices": support_devices,
}


def render(findings: list[str], style: SiteStyle, size: int, rng: np.random.Generator,
           view: str = "PA") -> tuple[np.ndarray, dict[str, str]]:
    """Render one image; returns uint8 pixels and {finding: description} of what was drawn."""
    mag = style.magnification * (1.06 if view == "AP" else 1.0)
    c = Canvas(size, rng, mag)
    ordered = sorted(findings, key=lambda f: list(DRAWERS).index(f))
    for f in ordered:
        if f in GEOMETRY:
            GEOMETRY[f](c)
    described: dict[str, str] = {}
    if view == "LATERAL":
        draw_lateral(c)
    else:
        draw_anatomy(c)
        draw_mediastinum(c)
        described = {f: DRAWERS[f](c) for f in ordered}
    return acquire(c.img, style, rng), described


def draw_lateral(c: Canvas) -> None:
    """A lateral projection: one lung field, spine posteriorly, heart anteriorly (findings not drawn)."""
    c.img[c.ellipse(0.5, 0.55, 0.4, 0.48)] = 0.42
    lung = c.ellipse(0.5, 0.45, 0.25, 0.3)
    c.img[lung] = 0.16 + smooth_noise(c.rng, c.size, 20)[lung] * 0.03
    c.img += 0.25 * ((c.x > 0.72) & (c.x < 0.8) & (c.y > 0.15))
    c.img[c.ellipse(0.38, 0.62, c.heart_rx * 1.2, 0.14)] = 0.6


def acquire(img: np.ndarray, s: SiteStyle, rng: np.random.Generator) -> np.ndarray:
    out = np.clip(img, 0, 1)
    if s.blur:
        k = np.ones(2 * s.blur + 1, dtype=np.float32) / (2 * s.blur + 1)
        out = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 0, out)
        out = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, out)
    out = np.clip((out - 0.5) * s.contrast + 0.5 + s.brightness, 0, 1) ** s.gamma
    out = out + rng.normal(0, s.noise, out.shape).astype(np.float32)
    n = out.shape[0]
    if s.marker != "none":
        m = max(3, n // 24)
        r0 = 2 if s.marker.startswith("top") else n - 2 - 2 * m
        c0 = 2 if s.marker.endswith("left") else n - 2 - m
        out[r0:r0 + 2 * m, c0:c0 + max(1, m // 3)] = 1.0
        out[r0 + 2 * m - max(1, m // 3):r0 + 2 * m, c0:c0 + m] = 1.0
    if s.border:
        out[:s.border], out[-s.border:], out[:, :s.border], out[:, -s.border:] = 0, 0, 0, 0
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


SHORTCUT_RADIUS, SHORTCUT_WIDTH = 0.045, 0.02   # E2's marker ring: outer radius and width, shares of the width


def shortcut_mask(size: int, radius: float = SHORTCUT_RADIUS) -> np.ndarray:
    """Where E2's planted marker goes: a ring of outer ``radius`` near the bottom-right corner, where no site
    marker is."""
    y, x = np.mgrid[0:size, 0:size] / size
    r = np.hypot(x - 0.88, y - 0.88)
    return (r > round(radius - SHORTCUT_WIDTH, 6)) & (r < radius)   # rounded: 0.045 - 0.02 is 0.025 exactly


def add_shortcut_marker(pixels: np.ndarray, radius: float = SHORTCUT_RADIUS) -> np.ndarray:
    """The image with E2's marker burnt in after acquisition (only the ``shortcut_mask`` pixels change)."""
    out = pixels.copy()
    out[shortcut_mask(len(out), radius)] = 255
    return out


def counterfactual_pair(findings: list[str], style: SiteStyle, size: int, seed: int,
                        view: str = "PA", radius: float = SHORTCUT_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """One image rendered twice from the same random state (``seed``), without and with E2's marker."""
    plain, _ = render(findings, style, size, np.random.default_rng(seed), view)
    marked, _ = render(findings, style, size, np.random.default_rng(seed), view)
    return plain, add_shortcut_marker(marked, radius)

