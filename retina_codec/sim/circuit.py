"""The simulated retina's computation: bipolar subunits → amacrine inhibition → ganglion generator → rate.

Per frame bin t, with contrast ``c = 2 s / 255 - 1`` of the uint8 frames (``(T, H*W)``):

1. bipolar drive ``u = c @ D`` (D: one difference-of-Gaussians column per subunit position), filtered
   in time by the ON or OFF biphasic kernel (lag >= 1) and signed: ``v_i = pol_i (k_pol * u_pos(i))(t)``,
   then divided by the stimulus' drive scale ``sigma_pol`` (contrast gain, set by calibration);
2. pre-synaptic output ``b0 = relu(v - theta_b)``; amacrine input ``p = b0 @ amacrine_pooling.T``;
   amacrine output ``a = k_am * p`` (delayed low-pass, lag >= ``amacrine_delay``);
3. terminal output ``b = relu(v - theta_b - a @ amacrine_weights.T)`` (the bipolar traces);
4. ganglion generator ``g = b @ pooling_weights.T`` for circuit cells, ``g = k_ln * (c @ ln_spatial)`` for
   LN cells;
5. rate (Hz) ``r = gain * softplus(beta (g~ - theta)) / beta`` with ``g~ = (g - mu) / sd``; ``mu``, ``sd``
   and ``gain`` are constants per cell and stimulus (:meth:`Circuit.fit_output`), then Poisson counts.

Everything is feedforward and causal: the rate in bin t depends on frames ``<= t - 1`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..progress import progress
from .kernels import CausalFilter, biphasic_kernel, delayed_exponential, dog
from .layout import Layout
from .presets import SimParams

__all__ = ["Circuit", "CircuitOutput", "Calibration"]


@dataclass
class CircuitOutput:
    """Internal signals for one movie: ``generator (T, N)``, ``bipolar (T, S)``, ``amacrine (T, A)`` float32."""

    generator: np.ndarray
    bipolar: np.ndarray
    amacrine: np.ndarray


@dataclass
class Calibration:
    """Per-stimulus gain settings (a slow adaptation to the stimulus ensemble).

    ``drive_scale`` comes from a separate calibration clip (:meth:`Circuit.drive_scale`); the output
    constants from the recording's own generator (:meth:`Circuit.fit_output`).

    ``drive_scale (2,)``: s.d. of the ON and OFF bipolar drive; ``gen_mean``, ``gen_std``, ``gain`` (Hz),
    ``threshold``: ``(N,)`` per cell; ``beta``: softplus sharpness.
    """

    drive_scale: np.ndarray
    gen_mean: np.ndarray
    gen_std: np.ndarray
    gain: np.ndarray
    threshold: np.ndarray
    beta: float

    def rates(self, generator: np.ndarray) -> np.ndarray:
        """``(T, N)`` float32 firing rates in Hz from the generator signal."""
        z = (generator - self.gen_mean) / self.gen_std
        return (self.gain * _softplus(self.beta * (z - self.threshold)) / self.beta).astype(np.float32)

    def to_dict(self) -> dict[str, list[float] | float]:
        """JSON-serialisable copy."""
        return {k: (float(v) if np.isscalar(v) else np.asarray(v, float).tolist())
                for k, v in self.__dict__.items()}


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


class Circuit:
    """The bipolar → amacrine → ganglion circuit for one :class:`Layout`, applied to uint8 movies."""

    def __init__(self, layout: Layout, params: SimParams, chunk: int = 4096):
        self.layout, self.params, self.chunk = layout, params, int(chunk)
        p = params
        centres = layout.subunit_positions[: layout.n_positions]
        bip = dog(centres, p.frame_size, p.bipolar_center_sigma, p.bipolar_surround_sigma,
                  p.bipolar_surround_weight)
        basis = np.concatenate([bip, layout.ln_spatial]).reshape(len(bip) + len(layout.ln_spatial), -1)
        self.basis = np.ascontiguousarray(basis.T, dtype=np.float32)      # (H*W, P + L)
        self.basis_sum = self.basis.sum(0)
        self.kernel_on = biphasic_kernel(p.bipolar_lags, p.bipolar_order, p.bipolar_tau_fast,
                                         p.bipolar_tau_slow, p.bipolar_biphasic)
        self.kernel_off = biphasic_kernel(p.bipolar_lags, p.bipolar_order, p.off_speedup * p.bipolar_tau_fast,
                                          p.off_speedup * p.bipolar_tau_slow, p.bipolar_biphasic)
        self.kernel_ln = self.kernel_on
        self.kernel_amacrine = delayed_exponential(p.amacrine_lags, p.amacrine_delay, p.amacrine_tau)

    # ---- stages -------------------------------------------------------------------------------------
    def _project(self, frames: np.ndarray) -> np.ndarray:
        """``(n, P + L)`` spatial drive of contrast ``2 s / 255 - 1`` for uint8 frames ``(n, H, W)``."""
        x = frames.reshape(len(frames), -1).astype(np.float32)
        return (x @ self.basis) * np.float32(2.0 / 255.0) - self.basis_sum

    def drive_scale(self, frames: np.ndarray) -> np.ndarray:
        """``(2,)`` s.d. of the ON and OFF bipolar drive over a movie (before normalisation)."""
        n_pos = self.layout.n_positions
        on, off = CausalFilter(self.kernel_on, n_pos), CausalFilter(self.kernel_off, n_pos)
        s = np.zeros(2)
        n = 0
        for a in range(0, len(frames), self.chunk):
            u = self._project(frames[a : a + self.chunk])[:, :n_pos]
            s += [np.square(on(u)).sum(), np.square(off(u)).sum()]
            n += u.size
        return np.sqrt(s / max(n, 1))

    def run(self, frames: np.ndarray, drive_scale: np.ndarray, desc: str = "circuit",
            quiet: bool | None = None) -> CircuitOutput:
        """Run the circuit over uint8 frames ``(T, H, W)``; see the module docstring for the equations."""
        lay, p = self.layout, self.params
        n_pos, n_sub, n_am = lay.n_positions, len(lay.subunit_positions), len(lay.amacrine_positions)
        n_cells, ln = len(lay.cell_types), lay.ln_cells
        t_total = len(frames)
        out = CircuitOutput(np.zeros((t_total, n_cells), np.float32), np.zeros((t_total, n_sub), np.float32),
                            np.zeros((t_total, n_am), np.float32))
        on, off = CausalFilter(self.kernel_on, n_pos), CausalFilter(self.kernel_off, n_pos)
        ln_filter = CausalFilter(self.kernel_ln, len(ln))
        am_filter = CausalFilter(self.kernel_amacrine, n_am)
        scale = np.concatenate([np.full(n_pos, drive_scale[0]), np.full(n_pos, drive_scale[1])])
        pool_t = lay.amacrine_pooling.T
        inhib_t = lay.amacrine_weights.T
        gang_t = lay.pooling_weights.T
        circuit_cells = np.setdiff1d(np.arange(n_cells), ln)
        for a in progress(range(0, t_total, self.chunk), desc=desc, quiet=quiet, unit="chunk"):
            proj = self._project(frames[a : a + self.chunk])
            u = proj[:, :n_pos]
            v = np.concatenate([on(u), -off(u)], axis=1) / scale
            b0 = np.maximum(v - p.bipolar_threshold, 0.0)
            am = am_filter(b0 @ pool_t)
            b = np.maximum(v - p.bipolar_threshold - am @ inhib_t, 0.0)
            g = b @ gang_t
            sl = slice(a, a + len(u))
            out.generator[sl, circuit_cells] = g[:, circuit_cells]
            out.generator[sl, ln] = ln_filter(proj[:, n_pos:])
            out.bipolar[sl] = b
            out.amacrine[sl] = am
        return out

    def fit_output(self, generator: np.ndarray, drive_scale: np.ndarray) -> Calibration:
        """Output gains that give every cell its target mean rate over ``generator`` ``(T, N)``.

        The generator is z-scored per cell and the softplus gain chosen so that the mean rate, excluding
        the start-up transient (the first ``bipolar_lags + amacrine_lags`` frames), equals the cell's
        target: a per-stimulus constant, like a slow adaptation to the stimulus ensemble.
        """
        lay, p = self.layout, self.params
        g = np.asarray(generator, np.float64)
        skip = min(p.bipolar_lags + p.amacrine_lags, len(g) // 2)
        mean, std = g[skip:].mean(0), g[skip:].std(0)
        std = np.where(std > 0, std, 1.0)
        z = (g[skip:] - mean) / std
        unit = (_softplus(p.output_beta * (z - lay.thresholds)) / p.output_beta).mean(0)
        gain = lay.target_rates / np.maximum(unit, 1e-12)
        return Calibration(np.asarray(drive_scale, float), mean, std, gain, lay.thresholds.copy(), p.output_beta)
