"""2-D Gaussian / ellipse fit of a spatial receptive field: centre, size, orientation, polarity.

Model: ``z(y, x) = offset + amplitude · exp(-½ dᵀ Σ⁻¹ d)``, ``d = (y - cy, x - cx)``, with ``Σ`` given by the
standard deviations along the major and minor axes and the angle of the major axis (radians, from the
+x (column) axis towards +y (row), in ``[0, π)``). The amplitude is signed, so OFF centres (negative) fit
as well as ON centres. Fitted by least squares (scipy) from a moment-based start at the strongest pixel.
Coordinates are pixels: ``(y, x)`` = (row, column), pixel centres at integers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares

from ..errors import ReceptiveFieldError

__all__ = ["GaussianFit", "fit_gaussian", "fit_gaussians", "gaussian_2d"]


@dataclass
class GaussianFit:
    """Result of :func:`fit_gaussian` (pixels, radians)."""

    center_y: float
    center_x: float
    sigma_major: float
    sigma_minor: float
    angle: float
    amplitude: float
    offset: float
    r2: float

    @property
    def center(self) -> tuple[float, float]:
        """``(y, x)`` in pixels."""
        return (self.center_y, self.center_x)

    @property
    def size(self) -> float:
        """Geometric-mean standard deviation ``√(σ_major σ_minor)`` in pixels."""
        return float(np.sqrt(self.sigma_major * self.sigma_minor))

    @property
    def polarity(self) -> int:
        """+1 for a positive (ON-like) centre, -1 for a negative (OFF-like) one."""
        return 1 if self.amplitude >= 0 else -1

    def ellipse(self, n_sigma: float = 2.0) -> tuple[tuple[float, float], float, float, float]:
        """``((cy, cx), major semi-axis, minor semi-axis, angle)`` of the ``n_sigma`` contour."""
        return self.center, n_sigma * self.sigma_major, n_sigma * self.sigma_minor, self.angle

    def to_dict(self) -> dict[str, float]:
        """Plain dict of the fitted values."""
        return asdict(self)


def gaussian_2d(shape: tuple[int, int], cy: float, cx: float, sigma_major: float, sigma_minor: float,
                angle: float = 0.0, amplitude: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """Evaluate the model on a ``shape = (H, W)`` pixel grid, float64."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u = c * dx + s * dy  # along the major axis
    v = -s * dx + c * dy
    return offset + amplitude * np.exp(-0.5 * ((u / sigma_major) ** 2 + (v / sigma_minor) ** 2))


def _start(img: np.ndarray) -> np.ndarray:
    iy, ix = np.unravel_index(np.argmax(np.abs(img)), img.shape)
    amp = float(img[iy, ix])
    wts = np.clip(img * np.sign(amp), 0, None)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    r = 3
    win = (np.abs(yy - iy) <= r) & (np.abs(xx - ix) <= r)
    w = wts * win
    tot = w.sum()
    cy = (w * yy).sum() / tot if tot > 0 else float(iy)
    cx = (w * xx).sum() / tot if tot > 0 else float(ix)
    if tot <= 0:
        return np.array([cy, cx, 0.0, 0.0, 0.0, amp, float(np.median(img))])
    # second moments (x, y) of the window: the start's axes and angle. A round start (equal σ) has no
    # gradient in the angle, and the fit then often stalls in a wrong orientation (e.g. RFs cut by a border)
    dy, dx = yy - cy, xx - cx
    cov = np.array([[(w * dx * dx).sum(), (w * dx * dy).sum()], [(w * dx * dy).sum(), (w * dy * dy).sum()]]) / tot
    var, vec = np.linalg.eigh(cov)  # ascending
    s_major, s_minor = (float(np.sqrt(max(v, 0.25))) for v in (var[1], var[0]))
    if s_major <= s_minor:
        s_major = s_minor * 1.05
    angle = float(np.arctan2(vec[1, 1], vec[0, 1]))
    return np.array([cy, cx, np.log(s_major), np.log(s_minor), angle, amp, float(np.median(img))])


def fit_gaussian(spatial: np.ndarray) -> GaussianFit:
    """Fit one spatial RF ``(H, W)``; NaN fields for an all-zero or non-finite map."""
    img = np.asarray(spatial, dtype=np.float64)
    if img.ndim != 2:
        raise ReceptiveFieldError(f"spatial: expected shape (H, W), found {img.shape}")
    if not np.isfinite(img).all() or not np.any(img):
        return GaussianFit(*([np.nan] * 8))
    scale = np.abs(img).max()
    z = img / scale
    p0 = _start(z)
    hh, ww = z.shape

    def resid(p: np.ndarray) -> np.ndarray:
        return (gaussian_2d(z.shape, p[0], p[1], np.exp(p[2]), np.exp(p[3]), p[4], p[5], p[6]) - z).ravel()

    lo = [-0.5, -0.5, np.log(0.1), np.log(0.1), -np.inf, -np.inf, -np.inf]
    hi = [hh - 0.5, ww - 0.5, np.log(2.0 * max(hh, ww)), np.log(2.0 * max(hh, ww)), np.inf, np.inf, np.inf]
    p0[:4] = np.clip(p0[:4], np.array(lo[:4]) + 1e-6, np.array(hi[:4]) - 1e-6)
    sol = least_squares(resid, p0, bounds=(lo, hi), method="trf", x_scale="jac")
    cy, cx, ls1, ls2, ang, amp, off = sol.x
    s1, s2 = np.exp(ls1), np.exp(ls2)
    if s2 > s1:
        s1, s2, ang = s2, s1, ang + np.pi / 2
    ss_res = float(np.square(sol.fun).sum())
    ss_tot = float(np.square(z - z.mean()).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else np.nan
    return GaussianFit(float(cy), float(cx), float(s1), float(s2), float(np.mod(ang, np.pi)),
                       float(amp * scale), float(off * scale), float(r2))


def fit_gaussians(spatial: np.ndarray) -> list[GaussianFit]:
    """Fit every map of a stack ``(N, H, W)``."""
    spatial = np.asarray(spatial)
    if spatial.ndim != 3:
        raise ReceptiveFieldError(f"spatial: expected shape (N, H, W), found {spatial.shape}")
    return [fit_gaussian(s) for s in spatial]
