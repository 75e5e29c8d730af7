"""Procedural chest-radiograph renderer behind the demo world: persistent anatomy + the 14 findings.

Everything is drawn as an X-ray *density* map (how much tissue a ray crosses) in anatomical
coordinates ``(u, v)`` in [-1, 1] (u: image left -> right, i.e. patient right -> left; v: top ->
bottom). A study's pose (rotation, shift, scale) only changes which ``(u, v)`` each pixel sees, so
the same patient looks the same across studies. Density becomes brightness with a film-like curve
``1 - exp(-k * D)`` plus per-study exposure, contrast and noise.

All maths is vectorised numpy on one ``size x size`` float32 grid (no per-pixel Python); tubes and
wires are splatted with ``np.bincount``. Findings are drawn where a radiologist looks for them:
see :func:`_draw_findings`.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from .pathologies import INDEX

F32 = np.float32
TEX = 96  # vessel-texture resolution (texels), in lung coordinates
_LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")


# ----------------------------------------------------------------------------- patient
@dataclass(eq=False)
class Patient:
    """One synthetic person: anatomy that persists across all of their studies."""

    patient_id: str
    sex: str  # "F" or "M"
    age: int
    cage_w: float  # half width of the rib cage (inner), anatomical units
    apex_v: float  # top of the lung apices
    dia_v: float  # top of the right hemidiaphragm dome at normal inspiration
    dia_drop: float  # left dome sits this much lower
    dome_h: float  # dome height (costophrenic recess depth)
    ctr: float  # normal cardiothoracic ratio of this heart (PA)
    heart_rfrac: float  # share of the heart's width to the right of the midline (image left)
    heart_top: float  # top of the cardiac silhouette, in normalised lung height
    medi_w: float  # upper mediastinum half width
    knob: float  # aortic knob bulge
    spine_w: float
    rib_spacing: float
    rib_phase: float
    rib_c1: float  # rib curve: v = -c1 * |u| + c2 * |u|^2
    rib_c2: float
    rib_thick: float  # rib thickness as a fraction of the spacing
    clav_off: float  # medial clavicle end below the apex
    clav_slope: float
    neck_w: float
    shoulder_v: float
    soft: float  # soft-tissue thickness (habitus)
    breast: float  # 0 = none, else size of the breast shadows
    gas_bubble: float  # gastric air bubble size (0 = none)
    marker: int  # 0 none, 1 "R" top-left, 2 "L" top-right
    frame_scale: float  # body size in the frame (with frame_dx/dy: the patient's usual placement)
    frame_dx: float
    frame_dy: float
    finding_seed: int  # geometry of persistent findings (side, lobe, nodule position)
    vessels: np.ndarray = field(repr=False)  # TEX x TEX float32 vessel tree in (u, q) lung coordinates


def sample_patient(rng: np.random.Generator, patient_id: str) -> Patient:
    """A random patient. Everything is drawn from ``rng`` in a fixed order (deterministic)."""
    u = rng.uniform
    sex = "F" if rng.random() < 0.5 else "M"
    cage_w = u(0.72, 0.84) * (0.96 if sex == "F" else 1.0)
    p = Patient(
        patient_id=str(patient_id),
        sex=sex,
        age=int(rng.integers(20, 91)),
        cage_w=cage_w,
        apex_v=u(-0.78, -0.68),
        dia_v=u(0.46, 0.58),
        dia_drop=u(0.01, 0.06),
        dome_h=u(0.12, 0.19),
        ctr=u(0.38, 0.46),
        heart_rfrac=u(0.28, 0.36),
        heart_top=u(0.4, 0.5),
        medi_w=u(0.13, 0.17),
        knob=u(0.02, 0.05),
        spine_w=u(0.06, 0.075),
        rib_spacing=u(0.115, 0.135),
        rib_phase=u(0.0, 1.0),
        rib_c1=u(0.2, 0.3),
        rib_c2=u(0.65, 0.85),
        rib_thick=u(0.4, 0.5),
        clav_off=u(0.1, 0.17),
        clav_slope=u(0.12, 0.25),
        neck_w=u(0.24, 0.32),
        shoulder_v=u(-0.95, -0.8),
        soft=u(0.85, 1.2),
        breast=u(0.6, 1.0) if (sex == "F" and rng.random() < 0.75) else 0.0,
        gas_bubble=u(0.5, 1.0) if rng.random() < 0.7 else 0.0,
        marker=int(rng.choice([0, 1, 2], p=[0.4, 0.35, 0.25])),
        frame_scale=u(0.86, 1.06),
        frame_dx=u(-0.05, 0.05),
        frame_dy=u(-0.07, 0.07),
        finding_seed=int(rng.integers(2**62)),
        vessels=np.zeros((1, 1), F32),
    )
    p.vessels = _vessel_texture(np.random.default_rng(int(rng.integers(2**62))))
    return p


def _splat(xs: np.ndarray, ys: np.ndarray, ws: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear splat of weighted points (pixel coordinates) into an h x w image (vectorised)."""
    x0 = np.floor(xs).astype(np.int64)
    y0 = np.floor(ys).astype(np.int64)
    fx = (xs - x0).astype(F32)
    fy = (ys - y0).astype(F32)
    out = np.zeros(h * w, np.float64)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out += np.bincount((yi * w + xi)[ok], weights=(ws * wt)[ok], minlength=h * w)
    return out.reshape(h, w).astype(F32)


def _vessel_texture(rng: np.random.Generator) -> np.ndarray:
    """Branching pulmonary vessels radiating from both hila, thicker centrally (patient-specific)."""
    from scipy.ndimage import gaussian_filter

    # all branches of one generation at once: 6 trunks per hilum, 4 binary splits
    side = np.repeat([-1.0, 1.0], 6)
    x = side * rng.uniform(0.17, 0.24, 2).repeat(6)
    y = rng.uniform(0.42, 0.52, 2).repeat(6)  # hilum in (u, q)
    ang = np.tile(np.linspace(-2.3, 2.3, 6), 2) + rng.normal(0, 0.15, 12)  # 0 = lateral, < 0 = upward
    length = rng.uniform(0.16, 0.26, 12)
    width = np.ones(12)
    xs, ys, ws = [], [], []
    n = 14
    t = np.linspace(1.0 / n, 1.0, n)[None, :]
    for depth in range(5):
        bend = rng.normal(0, 0.25, len(x))
        a = ang[:, None] + bend[:, None] * t
        px = x[:, None] + np.cumsum(side[:, None] * np.cos(a), axis=1) * (length / n)[:, None]
        py = y[:, None] + np.cumsum(np.sin(a) * 1.3, axis=1) * (length / n)[:, None]
        xs.append(px.ravel())
        ys.append(py.ravel())
        ws.append(np.repeat(width * length / n * TEX, n))
        if depth == 4:
            break
        m = len(x)
        spread = rng.uniform(0.25, 0.6, (m, 2)) * np.array([-1.0, 1.0])
        x, y, side = px[:, -1].repeat(2), py[:, -1].repeat(2), side.repeat(2)
        ang = ((ang + bend)[:, None] + spread).ravel()
        length = length.repeat(2) * rng.uniform(0.55, 0.8, 2 * m)
        width = width.repeat(2) * 0.72
    x = (np.concatenate(xs) + 1) * 0.5 * (TEX - 1)
    y = (np.concatenate(ys) * 0.9 + 0.05) * (TEX - 1)
    tex = _splat(x, y, np.concatenate(ws), TEX, TEX)
    tex = gaussian_filter(tex, 1.0)
    yy, xx = np.mgrid[0:TEX, 0:TEX] / (TEX - 1)
    tex *= np.clip(1.25 - 1.3 * np.hypot(np.abs(xx * 2 - 1) - 0.2, (yy - 0.5) * 0.8), 0.15, 1)  # fade outwards
    tex /= np.percentile(tex, 99.5) + 1e-6
    mottle = gaussian_filter(rng.standard_normal((TEX, TEX)).astype(F32), 1.2)
    return np.clip(tex + 0.12 * mottle / (mottle.std() + 1e-6), 0, 1.5).astype(F32)


def _sample_tex(tex: np.ndarray, u: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a TEX x TEX texture at lung coordinates (u in [-1,1], q in [0,1])."""
    n = tex.shape[0]
    x = np.clip((u + 1) * 0.5 * (n - 1), 0, n - 1.001)
    y = np.clip((q * 0.9 + 0.05) * (n - 1), 0, n - 1.001)
    x0 = x.astype(np.int32)
    y0 = y.astype(np.int32)
    fx = x - x0
    fy = y - y0
    flat = tex.ravel()
    i = y0 * n + x0
    top = flat[i] * (1 - fx) + flat[i + 1] * fx
    bot = flat[i + n] * (1 - fx) + flat[i + n + 1] * fx
    return top * (1 - fy) + bot * fy


# ----------------------------------------------------------------------------- per-study geometry
@dataclass
class Geometry:
    """Where things are in one study (after view, inspiration and the shape-changing findings)."""

    view: str
    cage_w: float
    apex_v: float
    dia_r: float  # dome tops (image left = patient right)
    dia_l: float
    dome_h: float
    heart_r: float  # extent of the heart to the image left of the midline
    heart_l: float  # ... and to the image right
    heart_top: float
    medi_w: float
    knob: float
    carina_v: float
    hilum_v: float
    clav_v: float

    @property
    def heart_width(self) -> float:
        return self.heart_r + self.heart_l

    @property
    def heart_cx(self) -> float:
        return 0.5 * (self.heart_l - self.heart_r)

    @property
    def heart_cy(self) -> float:
        return 0.5 * (self.heart_top + self.dia_l)

    @property
    def ctr(self) -> float:
        """Cardiothoracic ratio as drawn: widest heart / widest inner thorax."""
        return self.heart_width / (2.0 * self.cage_w)

    def dia(self, u: np.ndarray) -> np.ndarray:
        """Diaphragm (top of the abdomen) per column: two domes, deep costophrenic recesses."""
        uc, hw = 0.42 * self.cage_w, 0.52 * self.cage_w
        right = self.dia_r + self.dome_h * np.minimum(((u + uc) / hw) ** 2, 1.6)
        left = self.dia_l + self.dome_h * np.minimum(((u - uc) / hw) ** 2, 1.6)
        return np.where(u < 0, right, left)

    def q(self, v: np.ndarray) -> np.ndarray:
        """Normalised lung height: 0 at the apex, 1 at the dome tops."""
        return (v - self.apex_v) / (0.5 * (self.dia_r + self.dia_l) - self.apex_v)

    def cage(self, v: np.ndarray) -> np.ndarray:
        """Inner half width of the rib cage per row (narrow apex, widest at the bases)."""
        s = np.clip((v - self.apex_v) / (0.5 * (self.dia_r + self.dia_l) + self.dome_h - self.apex_v), 0, 1.4)
        r = np.clip(s / 0.85, 0, 1)
        return self.cage_w * (0.3 + 0.7 * np.sqrt(1 - (1 - r) ** 2))

    def lung_top(self, au: np.ndarray) -> np.ndarray:
        return self.apex_v + 1.4 * (au - 0.34 * self.cage_w) ** 2


def study_geometry(patient: Patient, labels: np.ndarray | None = None, *, view: str = "PA",
                   inspiration: float = 0.0, rng: np.random.Generator | None = None) -> Geometry:
    """Geometry of one study; ``labels`` changes heart size (Cardiomegaly), mediastinum (ECM), diaphragm."""
    lab = _strengths(labels)
    ap = view == "AP"
    dia_r = patient.dia_v + inspiration - (0.05 if ap else 0.0)
    dia_l = dia_r + patient.dia_drop
    # Atelectasis with volume loss lifts a hemidiaphragm (side from the persistent finding geometry).
    if lab[INDEX["Atelectasis"]] > 0:
        side = _finding_rng(patient, "Atelectasis").choice([-1, 1])
        lift = 0.045 * lab[INDEX["Atelectasis"]]
        if side < 0:
            dia_r -= lift
        else:
            dia_l -= lift
    ctr = patient.ctr
    cm = lab[INDEX["Cardiomegaly"]]
    if cm > 0:
        big = _finding_rng(patient, "Cardiomegaly").uniform(0.56, 0.68)
        ctr = big if cm >= 1 else max(ctr, 0.505)  # uncertain: borderline
    if ap:
        ctr *= 1.08  # AP magnifies the heart
    width = ctr * 2 * patient.cage_w
    heart_r = patient.heart_rfrac * patient.ctr * 2 * patient.cage_w + 0.35 * (width - patient.ctr * 2 * patient.cage_w)
    medi, knob = patient.medi_w, patient.knob
    ecm = lab[INDEX["Enlarged Cardiomediastinum"]]
    if ecm > 0:
        f = _finding_rng(patient, "Enlarged Cardiomediastinum").uniform(1.5, 1.8)
        medi *= 1 + (f - 1) * ecm
        knob *= 1 + ecm
    span = 0.5 * (dia_r + dia_l) - patient.apex_v
    return Geometry(
        view=view,
        cage_w=patient.cage_w * (1.0 + 0.3 * inspiration),
        apex_v=patient.apex_v + (0.03 if ap else 0.0),
        dia_r=dia_r,
        dia_l=dia_l,
        dome_h=patient.dome_h * (0.8 if ap else 1.0),
        heart_r=heart_r,  # an enlarged heart grows mostly to the patient's left
        heart_l=width - heart_r,
        heart_top=patient.apex_v + patient.heart_top * span,
        medi_w=medi,
        knob=knob,
        carina_v=patient.apex_v + 0.42 * span,
        hilum_v=patient.apex_v + 0.5 * span,
        clav_v=patient.apex_v + patient.clav_off - (0.07 if ap else 0.0),
    )


# ----------------------------------------------------------------------------- helpers
def _strengths(labels: np.ndarray | None) -> np.ndarray:
    """Drawing strength per label: 1 for positive, 0.45 for uncertain (drawn faintly), 0 otherwise."""
    out = np.zeros(len(INDEX), np.float32)
    if labels is None:
        return out
    lab = np.asarray(labels, dtype=np.float32)
    out[lab == 1] = 1.0
    out[lab == -1] = 0.45
    return out


def _finding_rng(patient: Patient, name: str) -> np.random.Generator:
    """Persistent per-patient randomness for one finding (same side/lobe/position across studies)."""
    return np.random.default_rng([patient.finding_seed, INDEX[name]])


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(size, dtype=F32) + 0.5) / size * 2 - 1).astype(F32)
    return np.broadcast_to(c[None, :], (size, size)).copy(), np.broadcast_to(c[:, None], (size, size)).copy()


def _soft(d: np.ndarray, w: float) -> np.ndarray:
    """Anti-aliased step: 0 where d << -w/2, 1 where d >> w/2 (w ~ one pixel)."""
    return np.clip(d * (1.0 / w) + 0.5, 0.0, 1.0)


def _gauss(u, v, cu, cv, su, sv):
    return np.exp(-(((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))


def _seg_dist(u, v, p0, p1):
    """Distance from every grid point to the segment p0-p1."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((u - p0[0]) * dx + (v - p0[1]) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
    return np.hypot(u - p0[0] - t * dx, v - p0[1] - t * dy)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int = 7) -> np.ndarray:
    """Low-frequency noise in [0, 1] (bilinear upsampling of a small random grid)."""
    small = rng.random((cells + 1, cells + 1)).astype(F32)
    c = np.linspace(0, cells, size, dtype=F32)
    i = np.minimum(c.astype(np.int32), cells - 1)
    f = c - i
    rows = small[i] * (1 - f)[:, None] + small[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _bezier(ctrl: list[tuple[float, float]], n: int) -> np.ndarray:
    """Points on a Bezier curve through control points (de Casteljau, vectorised over t)."""
    t = np.linspace(0, 1, n)[:, None]
    pts = [np.asarray(p, float)[None, :] for p in ctrl]
    while len(pts) > 1:
        pts = [(1 - t) * a + t * b for a, b in itertools.pairwise(pts)]
    return pts[0]


# ----------------------------------------------------------------------------- pose
@dataclass
class Pose:
    rot: float = 0.0
    tx: float = 0.0
    ty: float = 0.0
    scale: float = 1.0

    def to_anatomy(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.rot), math.sin(self.rot)
        k = 1.0 / self.scale
        xs, ys = x - self.tx, y - self.ty
        return ((c * xs + s * ys) * k).astype(F32), ((-s * xs + c * ys) * k).astype(F32)

    def to_pixels(self, pts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.rot), math.sin(self.rot)
        x = self.scale * (c * pts[:, 0] - s * pts[:, 1]) + self.tx
        y = self.scale * (s * pts[:, 0] + c * pts[:, 1]) + self.ty
        return (x + 1) * 0.5 * size - 0.5, (y + 1) * 0.5 * size - 0.5


@dataclass
class StudyParams:
    """What changes between two studies of the same patient."""

    pose: Pose
    inspiration: float
    gain: float
    contrast: float
    brightness: float
    gamma: float
    noise: float
    haze: float
    tilt: float  # exposure gradient top -> bottom
    seed: int  # per-study finding jitter, noise


def sample_study_params(rng: np.random.Generator, view: str) -> StudyParams:
    ap = view == "AP"
    u = rng.uniform
    return StudyParams(
        pose=Pose(rot=u(-0.035, 0.035), tx=u(-0.025, 0.025), ty=u(-0.025, 0.025), scale=u(0.97, 1.03)),
        inspiration=u(-0.035, 0.035),
        gain=u(2.0, 2.5),
        contrast=u(1.2, 1.5) * (0.88 if ap else 1.0),
        brightness=u(-0.1, 0.02),
        gamma=u(0.85, 1.2),
        noise=u(0.006, 0.02),
        haze=u(0.0, 0.08) + (0.06 if ap else 0.0),
        tilt=u(-0.05, 0.05),
        seed=int(rng.integers(2**62)),
    )


# ----------------------------------------------------------------------------- rendering
def render_layers(patient: Patient, labels: np.ndarray | None, *, size: int = 128, view: str = "PA",
                  params: StudyParams | None = None, rng: np.random.Generator | None = None,
                  with_masks: bool = False) -> tuple[np.ndarray, dict]:
    """Image (uint8) and, when ``with_masks``, the anatomy as drawn (masks on the image grid + geometry).

    Masks: ``heart`` (silhouette above the diaphragm), ``thorax`` (inside the rib cage, above the
    diaphragm), ``lung_r`` / ``lung_l`` (image left / right), and ``regions`` used by tests:
    ``costophrenic_r/l``, ``apex_lateral_r/l``, ``perihilar``, ``lower_r/l``.
    """
    if params is None:
        if rng is None:
            raise ValueError("render_layers needs params or rng")
        params = sample_study_params(rng, view)
    lab = _strengths(labels)
    g = study_geometry(patient, labels, view=view, inspiration=params.inspiration)
    srng = np.random.default_rng(params.seed)
    noise_field = srng.standard_normal((size, size), dtype=F32)
    jitter_seed = int(srng.integers(2**62))

    x, y = _grid(size)
    pose = params.pose
    pose = Pose(rot=pose.rot, tx=pose.tx + patient.frame_dx, ty=pose.ty + patient.frame_dy,
                scale=pose.scale * patient.frame_scale)
    u, v = pose.to_anatomy(x, y)
    px = 2.0 / size / pose.scale  # one pixel in anatomical units
    au = np.abs(u)
    right = u < 0  # image left = patient right

    # --- body outline: neck, sloping shoulders, arms at the sides
    trap = patient.shoulder_v - 0.32 * (1 - np.clip((au - patient.neck_w) / (0.95 - patient.neck_w), 0, 1)) ** 1.5
    body = np.maximum(_soft(v - trap, 4 * px), _soft(patient.neck_w - au, 4 * px))
    edge = np.clip((1.15 - au) / 0.25, 0, 1)
    D = (0.46 * patient.soft) * body * (0.7 + 0.3 * edge)

    # --- rib cage, lungs and diaphragm
    T = g.cage(v)
    dia = g.dia(u)
    q = g.q(v)
    top = g.lung_top(au)
    lung = _soft(T - au, px) * _soft(v - top, 2 * px) * _soft(dia - v, px)
    air = lung * np.sqrt(np.clip((T - au) / 0.14, 0.05, 1)) * np.sqrt(np.clip((v - top) / 0.12, 0.05, 1))
    # mediastinum: upper band with the aortic knob on the patient's left, then the heart
    mw = g.medi_w + np.where(u > 0, g.knob * np.exp(-(((v - (g.apex_v + 0.2)) / 0.07) ** 2)), 0.0)
    medi = _soft(mw - np.abs(u - 0.01), 0.03) * _soft(v - (g.apex_v - 0.3), 4 * px)
    t = np.clip((v - g.heart_top) / (g.dia_l - g.heart_top), 0, 1.3)
    lb = g.medi_w + (g.heart_l - g.medi_w) * np.sin(np.minimum(t * (math.pi / 2 / 0.8), math.pi / 2)) ** 0.8
    rb = 0.9 * g.medi_w + (g.heart_r - 0.9 * g.medi_w) * np.sin(np.minimum(t * (math.pi / 2 / 0.6), math.pi / 2))
    heart = _soft(lb - u, 1.5 * px) * _soft(u + rb, 1.5 * px) * _soft(v - g.heart_top, 0.05)
    air = air * (1 - np.maximum(medi, heart))
    below = _soft(v - dia, 2 * px) * _soft(T + 0.08 - au, 6 * px)

    # --- findings that act on the air (fluid, collapse, pneumothorax ...) and add density
    vessels = _sample_tex(patient.vessels, u, q) * air
    extra, air, vessels, devices = _draw_findings(patient, g, lab, u, v, au, q, T, dia, top, air, vessels,
                                                 px, size, pose, jitter_seed)

    D = D - 0.34 * air + 0.09 * vessels + extra
    D += 0.2 * heart * _soft(dia + 0.05 - v, px) + 0.2 * medi + 0.22 * below
    hil = _gauss(au, v, 0.2, g.hilum_v, 0.07, 0.1)
    D += 0.06 * hil

    # trachea and main bronchi (air, dark)
    tr = _soft(0.032 - np.abs(u + 0.005), px) * _soft(g.carina_v - v, 2 * px)
    br = np.minimum(_seg_dist(u, v, (0.0, g.carina_v), (-0.14, g.carina_v + 0.1)),
                    _seg_dist(u, v, (0.0, g.carina_v), (0.15, g.carina_v + 0.13)))
    D -= 0.08 * tr + 0.05 * _soft(0.022 - br, px)
    # spine: vertebral bodies and disc spaces, visible through the trachea and faintly behind the heart
    vert = 0.75 + 0.25 * np.cos((v - patient.rib_phase * 0.1) * (2 * math.pi / (patient.rib_spacing * 0.95)))
    D += 0.05 * _soft(patient.spine_w - au, 2 * px) * vert

    # --- bones
    D += _ribs(patient, g, lab, u, v, au, T, dia, px, jitter_seed)
    # clavicles (S-shaped bars to the shoulders)
    cv = g.clav_v - patient.clav_slope * (au - 0.08) + 0.25 * (au - 0.35) ** 2
    clav = _soft(0.036 - np.abs(v - cv), 1.5 * px) * _soft(au - 0.06, 2 * px) * _soft(0.75 - au, 3 * px)
    D += 0.1 * clav * (1.2 - 0.4 * au)
    # scapulae: over the upper lateral lungs on AP, outside them on PA
    if view == "AP":
        sc = _gauss(au, v, 0.66 * patient.cage_w / 0.78, g.apex_v + 0.38, 0.14, 0.3)
        D += 0.05 * _soft(sc - 0.35, 0.08)
    # humeral heads in the upper corners
    D += 0.16 * _soft(0.16 - np.hypot(au - 1.0, v - patient.shoulder_v - 0.15), 2 * px) * body
    # breast shadows over the lower lungs
    if patient.breast > 0:
        bs = _soft(0.3 * patient.breast - np.hypot((au - 0.5) / 1.3, v - (g.dia_r + 0.02)), 4 * px)
        D += 0.1 * patient.breast * bs * _soft(v - g.hilum_v - 0.1, 0.15)
    # gastric bubble under the left dome (upright films)
    if patient.gas_bubble > 0 and view == "PA":
        bu = _soft(1 - np.hypot((u - 0.35) / (0.12 * patient.gas_bubble), (v - g.dia_l - 0.12) / 0.07), 0.1)
        D -= 0.18 * bu * _soft(v - (g.dia_l + 0.1), px)

    D += devices
    # --- exposure: film curve, contrast, brightness, gradient, noise
    img = 1.0 - np.exp(-params.gain * np.maximum(D + params.haze * body, 0))
    img = (img - 0.5) * params.contrast + 0.5 + params.brightness + params.tilt * v
    img = np.clip(img, 0, 1) ** params.gamma
    img = img + params.noise * noise_field
    _marker(img, patient.marker, size)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    info: dict = {"geometry": g}
    if with_masks:
        thorax = _soft(T - au, px) * _soft(v - top, 2 * px) * _soft(dia - v, px)
        heart_vis = heart * _soft(dia - v, px)
        lr = lung * right
        ll = lung * (~right)
        low = (q > 0.78) & (q < 1.15)
        info.update(
            heart=heart_vis, thorax=thorax, lung_r=lr, lung_l=ll, body=body,
            regions={
                "costophrenic_r": (lr > 0.5) & low & (au > 0.45 * g.cage_w),
                "costophrenic_l": (ll > 0.5) & low & (au > 0.45 * g.cage_w),
                "apex_lateral_r": (lr > 0.5) & (q < 0.55) & (au > 0.4 * g.cage_w),
                "apex_lateral_l": (ll > 0.5) & (q < 0.55) & (au > 0.4 * g.cage_w),
                "perihilar": (lung > 0.5) & (np.abs(q - 0.5) < 0.2) & (au < 0.5 * g.cage_w),
                "lower_r": (lr > 0.5) & (q > 0.6),
                "lower_l": (ll > 0.5) & (q > 0.6),
                "upper_mediastinum": (q > 0.05) & (q < 0.35) & (au < 0.25),
            },
        )
    return out, info


def _ribs(patient, g, lab, u, v, au, T, dia, px, jitter_seed):
    """Posterior ribs as curved bright arcs (phase field), faint anterior ribs; Fracture breaks one."""
    sp = patient.rib_spacing
    w = v - (-patient.rib_c1 * au + patient.rib_c2 * au * au)
    phase = (w - g.apex_v) / sp + patient.rib_phase
    fr_strength = lab[INDEX["Fracture"]]
    extra = 0.0
    if fr_strength > 0:
        frng = _finding_rng(patient, "Fracture")
        side = frng.choice([-1.0, 1.0])
        k0 = float(frng.integers(3, 8)) + 0.5 * patient.rib_thick
        n = int(frng.integers(2, 4))
        af = frng.uniform(0.5, 0.68) * g.cage_w
        near = np.exp(-(((phase - patient.rib_phase) - k0 - (n - 1) / 2) / (0.3 + 0.5 * n)) ** 4)
        lateral = _soft(au - af, px) * (u * side > 0)
        phase = phase + fr_strength * 0.5 * lateral * near
        # callus at each break (bright), dark fracture line
        extra = -0.08 * _soft(0.015 - np.abs(au - af), px) * near * (u * side > 0)
        for i in range(n):
            rib_v = -patient.rib_c1 * af + patient.rib_c2 * af * af + g.apex_v + (k0 + i - patient.rib_phase) * sp
            extra = extra + 0.25 * _gauss(u, v, side * (af + 0.01 * i), rib_v, 0.045, 0.032)
        extra = fr_strength * extra
    fr = phase - np.floor(phase)
    th = patient.rib_thick
    eps = px / sp
    band = np.clip(fr / (1.5 * eps), 0, 1) * np.clip((th - fr) / (1.5 * eps), 0, 1)
    t = fr / th
    prof = band * (0.55 + 0.45 * (2 * t - 1) ** 2)
    region = _soft(T + 0.04 - au, 2 * px) * _soft(au - 0.07, 2 * px) * _soft(v - (g.apex_v - 0.12), 3 * px)
    region = region * (1 - 0.6 * _soft(v - dia - 0.04, 4 * px))
    # anterior ribs: run down and inwards from the lateral wall, faint
    wa = v + 0.42 * au
    pa = (wa - g.apex_v) / (sp * 1.25) + patient.rib_phase * 0.7
    fa = pa - np.floor(pa)
    ant = np.clip(fa / (1.25 * eps), 0, 1) * np.clip((0.3 - fa) / (1.25 * eps), 0, 1) * _soft(au - 0.3, 0.15)
    return 0.09 * prof * region + 0.02 * ant * region + extra


_GLYPHS = {
    1: ["1110", "1001", "1110", "1010", "1001"],  # R
    2: ["1000", "1000", "1000", "1000", "1111"],  # L
}


def _marker(img: np.ndarray, kind: int, size: int) -> None:
    """A lead laterality marker in a top corner (as on many real films)."""
    if kind == 0:
        return
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[kind]], dtype=np.float32)
    k = max(1, size // 64)
    glyph = np.kron(glyph, np.ones((k, k), np.float32))
    h, w = glyph.shape
    y0 = max(1, size // 20)
    x0 = y0 + k if kind == 1 else size - y0 - w - k
    img[y0:y0 + h, x0:x0 + w] = np.maximum(img[y0:y0 + h, x0:x0 + w], 0.97 * glyph)


# ----------------------------------------------------------------------------- findings
def _draw_findings(patient, g, lab, u, v, au, q, T, dia, top, air, vessels, px, size, pose, jitter_seed):
    """Density added by each finding, and the air / vessel maps it changes. Returns (extra, air, vessels, dev)."""
    extra = np.zeros_like(u)
    jr = np.random.default_rng(jitter_seed)
    side_of = {-1.0: u < 0, 1.0: u >= 0}
    lung_soft = air > 0.02

    def sides(name: str, p_bilateral: float) -> list[float]:
        r = _finding_rng(patient, name)
        if r.random() < p_bilateral:
            return [-1.0, 1.0]
        return [float(r.choice([-1.0, 1.0]))]

    # Pleural Effusion: fluid in the costophrenic recess, meniscus rising laterally, blunted angle.
    a = lab[INDEX["Pleural Effusion"]]
    if a > 0:
        fr = _finding_rng(patient, "Pleural Effusion")
        for sd in sides("Pleural Effusion", 0.35):
            h = (fr.uniform(0.14, 0.42) + jr.uniform(-0.03, 0.03)) * (1.0 if a >= 1 else 0.45)
            base = (g.dia_r if sd < 0 else g.dia_l) + g.dome_h
            level = base - h * (g.dia_l - g.apex_v) * 0.8 + 0.18 * np.clip(1 - au / g.cage_w, 0, 1) ** 1.5
            fl = _soft(v - level, 4 * px) * side_of[sd] * _soft(T + 0.02 - au, 2 * px)
            fl = fl * _soft(au - 0.08, 4 * px)
            air = air * (1 - 0.95 * fl)
            vessels = vessels * (1 - fl)
            extra += 0.05 * fl * np.clip((v - level) / 0.2, 0, 1)

    # Pneumothorax: collapsed lung edge (thin pleural line), dark rim without vessels apically/laterally.
    a = lab[INDEX["Pneumothorax"]]
    if a > 0:
        fr = _finding_rng(patient, "Pneumothorax")
        sd = float(fr.choice([-1.0, 1.0]))
        f = 1 - (fr.uniform(0.2, 0.42) + jr.uniform(-0.03, 0.03)) * (1.0 if a >= 1 else 0.5)
        ax, ay = sd * 0.06, (g.dia_r if sd < 0 else g.dia_l)
        u2, v2 = ax + (u - ax) / f, ay + (v - ay) / f
        au2 = np.abs(u2)
        inner = _soft(g.cage(v2) - au2, 1.5 * px) * _soft(v2 - g.lung_top(au2), 1.5 * px)
        hemi = side_of[sd] * _soft(T - au, px) * _soft(v - top, px) * _soft(dia - v, px)
        ptx = hemi * (1 - inner)
        line = 4 * inner * (1 - inner) * hemi
        vessels = vessels * (1 - ptx)
        air = np.maximum(air, 0.75 * ptx * _soft(T - au, px))
        extra += -0.05 * a * ptx + 0.14 * a * line + 0.04 * a * inner * hemi

    # Edema: bilateral, symmetric perihilar (bat-wing) haze, thick interstitial markings, Kerley lines.
    a = lab[INDEX["Edema"]]
    if a > 0:
        sev = _finding_rng(patient, "Edema").uniform(0.75, 1.0) * a
        bw = _gauss(au, v, 0.22 * g.cage_w / 0.78, g.hilum_v + 0.02, 0.32, 0.36)
        air = air * (1 - 0.62 * sev * bw)
        vessels = vessels * (1 + 0.5 * sev)
        kl = (np.cos(v * (2 * math.pi / 0.045)) > 0.75) * _soft(au - (T - 0.12), 3 * px) * (q > 0.6)
        extra += 0.05 * sev * kl * lung_soft + 0.05 * sev * bw * lung_soft

    # Consolidation: dense lobar opacity with a sharp fissure border and air bronchograms.
    a = lab[INDEX["Consolidation"]]
    if a > 0:
        fr = _finding_rng(patient, "Consolidation")
        lobe = _LOBES[int(fr.integers(len(_LOBES)))]
        sd = -1.0 if lobe.startswith("R") else 1.0
        cu, cq, ru, rq = {"RUL": (0.5, 0.22, 0.4, 0.3), "RML": (0.3, 0.68, 0.3, 0.2), "RLL": (0.55, 0.9, 0.4, 0.3),
                          "LUL": (0.5, 0.3, 0.4, 0.32), "LLL": (0.5, 0.88, 0.4, 0.3)}[lobe]
        reg = np.clip(1.7 * _gauss(au, q, cu * g.cage_w, cq + jr.uniform(-0.05, 0.05), ru, rq) - 0.15, 0, 1)
        if lobe == "RUL":  # the minor fissure gives a sharp lower border
            reg = reg * _soft(0.45 - q, 2 * px)
        reg = reg * side_of[sd] * lung_soft * (0.7 + 0.3 * _smooth_noise(jr, size, 6))
        air = air * (1 - 0.85 * a * reg)
        extra += a * reg * (0.04 - 0.1 * vessels)  # bronchi stay aerated: dark branching lines
        vessels = vessels * (1 - reg)

    # Pneumonia: patchy, fluffy consolidation (several blobs clustered in one zone).
    a = lab[INDEX["Pneumonia"]]
    if a > 0:
        fr = _finding_rng(patient, "Pneumonia")
        sd = float(fr.choice([-1.0, 1.0]))
        cu, cq = sd * fr.uniform(0.35, 0.6) * g.cage_w, fr.uniform(0.45, 0.85)
        cv = g.apex_v + cq * (0.5 * (g.dia_r + g.dia_l) - g.apex_v)
        patch = np.zeros_like(u)
        for _ in range(int(fr.integers(4, 8))):
            r = fr.uniform(0.05, 0.11)
            patch += _gauss(u, v, cu + fr.normal(0, 0.1), cv + fr.normal(0, 0.1), r, r * 1.2)
        patch = np.clip(patch, 0, 1) * (0.5 + 0.5 * _smooth_noise(jr, size, 9)) * lung_soft
        air = air * (1 - 0.8 * a * patch)
        extra += a * patch * (0.05 - 0.06 * vessels)

    # Lung Opacity: ill-defined hazy (ground-glass) patches, any lobe.
    a = lab[INDEX["Lung Opacity"]]
    if a > 0:
        fr = _finding_rng(patient, "Lung Opacity")
        haze = np.zeros_like(u)
        for _ in range(int(fr.integers(1, 4))):
            sd = float(fr.choice([-1.0, 1.0]))
            r = fr.uniform(0.12, 0.22)
            cv = g.apex_v + fr.uniform(0.25, 0.85) * (g.dia_r - g.apex_v)
            haze += _gauss(u, v, sd * fr.uniform(0.3, 0.6) * g.cage_w, cv, r, r * 1.1)
        haze = np.clip(haze, 0, 1) * (0.6 + 0.4 * _smooth_noise(jr, size, 8)) * lung_soft
        air = air * (1 - 0.6 * a * haze)
        extra += 0.03 * a * haze

    # Atelectasis: plate-like (discoid) linear opacities at the bases.
    a = lab[INDEX["Atelectasis"]]
    if a > 0:
        fr = _finding_rng(patient, "Atelectasis")
        band = np.zeros_like(u)
        for sd in sides("Atelectasis", 0.5):
            for _ in range(int(fr.integers(1, 3))):
                cu = sd * fr.uniform(0.3, 0.6) * g.cage_w
                base = g.dia_r if sd < 0 else g.dia_l
                cv = base - fr.uniform(0.06, 0.2)
                half, ang = fr.uniform(0.12, 0.22), fr.uniform(-0.3, 0.3) * sd
                p0 = (cu - half * math.cos(ang), cv - half * math.sin(ang))
                p1 = (cu + half * math.cos(ang), cv + half * math.sin(ang))
                band = np.maximum(band, _soft(fr.uniform(0.025, 0.04) - _seg_dist(u, v, p0, p1), 3 * px))
        band = band * lung_soft
        air = air * (1 - 0.85 * a * band)

    # Pleural Other: pleural thickening along the lateral chest wall (lumpy band), sometimes calcified.
    a = lab[INDEX["Pleural Other"]]
    if a > 0:
        fr = _finding_rng(patient, "Pleural Other")
        for sd in sides("Pleural Other", 0.3):
            th = fr.uniform(0.04, 0.07) * (1 + 0.35 * np.sin(v * fr.uniform(18, 30) + fr.uniform(0, 6)))
            q0 = fr.uniform(0.05, 0.35)
            q1 = q0 + fr.uniform(0.35, 0.6)
            zone = _soft(q - q0, 0.05) * _soft(q1 - q, 0.05)
            pl = _soft(au - (T - th), px) * _soft(T + 0.03 - au, px) * zone * side_of[sd]
            air = air * (1 - 0.95 * a * pl)
            extra += 0.07 * a * pl

    # Lung Lesion: a round nodule or a lobulated mass inside the lung.
    a = lab[INDEX["Lung Lesion"]]
    if a > 0:
        fr = _finding_rng(patient, "Lung Lesion")
        mass = fr.random() < 0.35
        for _ in range(1 if fr.random() < 0.8 else 2):
            sd = float(fr.choice([-1.0, 1.0]))
            r = fr.uniform(0.085, 0.14) if mass else fr.uniform(0.045, 0.07)
            cu = sd * fr.uniform(0.3, 0.62) * g.cage_w
            cv = g.apex_v + fr.uniform(0.15, 0.75) * (g.dia_r - g.apex_v)
            ang = np.arctan2(v - cv, u - cu)
            rr = r * (1 + (0.15 if mass else 0.05) * np.sin(3 * ang + fr.uniform(0, 6)))
            les = _soft(rr - np.hypot(u - cu, v - cv), 2 * px)
            air = air * (1 - 0.7 * a * les)
            extra += 0.02 * a * les

    # Support Devices: ET tube, NG tube, central line, ECG leads, pacemaker (metal: very bright).
    devices = np.zeros_like(u)
    if lab[INDEX["Support Devices"]] > 0:
        devices = _devices(patient, g, u, v, px, size, pose, jr)
    return extra, air, vessels, devices


def _devices(patient, g, u, v, px, size, pose, jr):
    from scipy.ndimage import gaussian_filter

    fr = _finding_rng(patient, "Support Devices")
    want = fr.random(5) < np.array([0.45, 0.45, 0.5, 0.45, 0.22])
    if not want.any():
        want[int(fr.integers(5))] = True
    et, ng, cl, ecg, pm = (bool(w) for w in want)
    step = 0.4  # pixels between splatted points
    thin: list[np.ndarray] = []
    thick: list[np.ndarray] = []

    def curve(ctrl, dst):
        n = int(sum(math.dist(a, b) for a, b in itertools.pairwise(ctrl)) * size / 2 / step) + 2
        dst.append(_bezier(ctrl, n))

    j = jr.normal
    if et:
        tip = g.carina_v - 0.08 + j(0, 0.02)
        for off in (-0.018, 0.018):
            curve([(off + 0.005, -1.1), (off + j(0, 0.01), -0.6), (off, tip)], thick)
    if ng:
        curve([(0.02, -1.1), (0.03 + j(0, 0.02), 0.0), (0.08, g.dia_l + 0.12), (0.38, g.dia_l + 0.22 + j(0, 0.03))],
              thin)
    if cl:
        s0 = -0.55 + j(0, 0.04)
        curve([(s0, g.clav_v + 0.05), (-0.2, g.clav_v + 0.13), (-0.06, g.clav_v + 0.12),
               (-0.05, g.carina_v + 0.1 + j(0, 0.03))], thin)
    pads = []
    if ecg:
        for _ in range(int(fr.integers(2, 5))):
            pu = fr.choice([-1, 1]) * fr.uniform(0.3, 0.8)
            pv = fr.uniform(-0.7, 0.3) + j(0, 0.02)
            pads.append((pu, pv))
            curve([(pu, pv), (pu + fr.normal(0, 0.3), pv + fr.normal(0, 0.3)), (np.sign(pu) * 1.2, fr.uniform(-1, 1))],
                  thin)
    if pm:
        gu, gv = 0.5, g.clav_v + 0.14
        curve([(gu - 0.05, gv), (0.05, gv - 0.05), (-0.02, g.carina_v + 0.2),
               (g.heart_cx + 0.1, g.heart_cy + 0.05)], thin)
    dev = np.zeros((size, size), F32)
    for pts, sigma, amp in ((thin, 0.3, 1.0), (thick, 0.4, 0.9)):
        if not pts:
            continue
        allp = np.concatenate(pts)
        xs, ys = pose.to_pixels(allp, size)
        lay = _splat(xs, ys, np.full(len(xs), step, F32), size, size)
        lay = gaussian_filter(lay, sigma * size / 128) if sigma * size / 128 > 0.3 else lay
        dev += amp * np.clip(lay, 0, 1.2)
    for pu, pv in pads:
        d = np.hypot(u - pu, v - pv)
        dev += 0.9 * _soft(0.035 - d, px) * (0.5 + 0.5 * _soft(d - 0.015, px))
    if pm:
        box = (np.abs((u - 0.5) / 0.075) ** 4 + np.abs((v - g.clav_v - 0.14) / 0.05) ** 4) ** 0.25
        dev += 1.5 * _soft(1 - box, 0.03)
    return dev
