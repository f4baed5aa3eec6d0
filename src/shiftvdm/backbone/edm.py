"""EDM maths (Karras et al. 2022, arXiv 2206.00364) as pure functions, shared by every EDM backbone.

The SVD backbone uses the v-parameterisation that Stable Video Diffusion was trained with (σ_data = 1):
c_skip = 1/(σ²+1), c_out = −σ/√(σ²+1), c_in = 1/√(σ²+1), c_noise = ¼·ln σ — exactly what diffusers'
``EulerDiscreteScheduler(prediction_type="v_prediction", timestep_type="continuous")`` applies. Backbones trained
from scratch may instead use the standard EDM F-parameterisation with their own σ_data (EDM Table 1).

Shapes: ``sigma`` is a scalar tensor or (B,); functions that combine it with a sample broadcast it over the
sample's trailing dims (see :func:`append_dims`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Prediction = Literal["v", "x0", "edm"]


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """``x`` with trailing singleton dims appended until it has ``ndim`` dims ((B,) -> (B, 1, ..., 1))."""
    if x.ndim > ndim:
        raise ValueError(f"append_dims: tensor has {x.ndim} dims, more than the target {ndim}")
    return x.reshape(*x.shape, *([1] * (ndim - x.ndim)))


def lognormal_sigma(n: int, p_mean: float, p_std: float, generator: torch.Generator,
                    device: torch.device | str | None = None) -> Tensor:
    """σ = exp(P_mean + P_std·z), z ~ N(0, 1): the EDM training noise-level distribution (EDM §5).

    Args:
        n: number of draws.
        p_mean: mean of ln σ (0.7 in SVD_Xtend/the SHIFT reference; −1.2 in EDM's image models).
        p_std: standard deviation of ln σ (1.6 in SVD_Xtend; 1.2 in EDM).
        generator: the only randomness source; draws happen on its device.
        device: where to put the result (default: the generator's device).

    Returns:
        (n,) float32 tensor of σ > 0.
    """
    z = torch.randn(n, generator=generator, device=generator.device, dtype=torch.float32)
    sigma = (p_mean + p_std * z).exp()
    return sigma if device is None else sigma.to(device)


def edm_scalings(sigma: Tensor, sigma_data: float = 1.0,
                 prediction: Prediction = "v") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pre-conditioning coefficients of the denoiser D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise).

    Args:
        sigma: noise level(s) σ > 0, any shape.
        sigma_data: standard deviation of the data σd; used by ``"edm"`` and ``"x0"`` (``"v"`` is SVD's
            convention, σd = 1).
        prediction: what the network F outputs:
            ``"v"``  — SVD's v-parameterisation (σ_data = 1): c_skip = 1/(σ²+1), c_out = −σ/√(σ²+1),
                       c_in = 1/√(σ²+1), c_noise = ¼·ln σ.
            ``"edm"`` — EDM's F-parameterisation (EDM Table 1): c_skip = σd²/(σ²+σd²),
                       c_out = σ·σd/√(σ²+σd²), c_in = 1/√(σ²+σd²), c_noise = ¼·ln σ.
            ``"x0"`` — F predicts x₀ directly: c_skip = 0, c_out = 1, c_in = 1/√(σ²+σd²), c_noise = ¼·ln σ.

    Returns:
        (c_skip, c_out, c_in, c_noise), each with the shape of ``sigma``.
    """
    sigma = torch.as_tensor(sigma)
    c_noise = 0.25 * sigma.log()
    if prediction == "v":
        # SVD's EulerDiscreteScheduler computes these exact expressions (v_prediction, continuous timesteps).
        var = sigma**2 + 1
        return 1 / var, -sigma / var**0.5, 1 / var**0.5, c_noise
    var = sigma**2 + sigma_data**2
    if prediction == "edm":
        return sigma_data**2 / var, sigma * sigma_data / var**0.5, 1 / var**0.5, c_noise
    if prediction == "x0":
        return torch.zeros_like(sigma), torch.ones_like(sigma), 1 / var**0.5, c_noise
    raise ValueError(f"edm_scalings: prediction must be 'v', 'edm' or 'x0', got {prediction!r}")


def edm_scale_input(x: Tensor, sigma: Tensor, sigma_data: float = 1.0) -> Tensor:
    """The network input c_in·x = x/√(σ² + σd²) (the same for every parameterisation here).

    Written as a division, like ``EulerDiscreteScheduler.scale_model_input``, so that the SVD sampler
    reproduces the pipeline's arithmetic exactly.
    """
    sigma = torch.as_tensor(sigma, device=x.device)
    return x / append_dims((sigma**2 + sigma_data**2) ** 0.5, x.ndim)


def edm_denoise(x: Tensor, model_output: Tensor, sigma: Tensor, sigma_data: float = 1.0,
                prediction: Prediction = "v") -> Tensor:
    """The denoised estimate D = c_skip·x + c_out·F for a network output F at noise level σ.

    For ``"v"`` this is the expression of ``EulerDiscreteScheduler.step`` (v_prediction),
    F·(−σ/√(σ²+1)) + x/(σ²+1), operation for operation.

    Args:
        x: noisy sample (B, ...).
        model_output: F, same shape as ``x``.
        sigma: scalar or (B,) noise level.
    """
    sigma = torch.as_tensor(sigma, device=x.device)
    if prediction == "x0":
        return model_output
    var = append_dims(sigma**2 + (1.0 if prediction == "v" else sigma_data**2), x.ndim)
    sigma = append_dims(sigma, x.ndim)
    if prediction == "v":
        return model_output * (-sigma / var**0.5) + x / var
    if prediction == "edm":
        return model_output * (sigma * sigma_data / var**0.5) + x * sigma_data**2 / var
    raise ValueError(f"edm_denoise: prediction must be 'v', 'edm' or 'x0', got {prediction!r}")


def edm_loss_weight(sigma: Tensor, sigma_data: float = 1.0) -> Tensor:
    """λ(σ) = (σ² + σd²)/(σ·σd)², EDM's loss weight (EDM Table 1); = (1+σ²)/σ² for σd = 1 (SVD)."""
    sigma = torch.as_tensor(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  append_zero: bool = True) -> Tensor:
    """The Karras σ grid (EDM Eq. 5): (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, i = 0…N−1.

    Computed in float64 and returned as float32, like diffusers' ``EulerDiscreteScheduler`` with
    ``use_karras_sigmas=True``; a final 0 is appended when ``append_zero`` (the sampler's last target).

    Returns:
        (num_steps + 1,) or (num_steps,) float32, decreasing.
    """
    if num_steps < 1:
        raise ValueError(f"karras_sigmas: num_steps must be >= 1, got {num_steps}")
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    if append_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(torch.float32)


def euler_step(x: Tensor, denoised: Tensor, sigma_from: Tensor | float, sigma_to: Tensor | float) -> Tensor:
    """One deterministic Euler step of the probability-flow ODE dx/dσ = (x − D)/σ (EDM Alg. 1 without churn).

    Matches ``EulerDiscreteScheduler.step`` with ``s_churn = 0``: the same operations in the same order.
    """
    derivative = (x - denoised) / sigma_from
    return x + derivative * (sigma_to - sigma_from)


def ancestral_sigmas(sigma_from: Tensor | float, sigma_to: Tensor | float,
                     eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """(σ_down, σ_up) of an ancestral step: σ_up = min(σ_to, η·√(σ_to²(σ_from² − σ_to²)/σ_from²)),
    σ_down = √(σ_to² − σ_up²). With η = 1 this is the exact DDPM-style posterior split (k-diffusion)."""
    sigma_from = torch.as_tensor(sigma_from, dtype=torch.float32)
    sigma_to = torch.as_tensor(sigma_to, dtype=torch.float32)
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).sqrt())
    sigma_down = (sigma_to**2 - sigma_up**2).clamp(min=0).sqrt()
    return sigma_down, sigma_up


def euler_ancestral_step(x: Tensor, denoised: Tensor, sigma_from: Tensor | float, sigma_to: Tensor | float,
                         noise: Tensor, eta: float = 1.0) -> Tensor:
    """One EDM Euler-ancestral step: an Euler step to σ_down, then fresh noise of std σ_up.

    This is the reference trainer's rollout step (gamma = 0, i.e. no churn): x ← x + (x − D)/σ_from·(σ_down −
    σ_from) + σ_up·n. ``eta = 0`` gives the deterministic Euler step.

    Args:
        x: current sample at σ_from.
        denoised: D(x; σ_from), same shape.
        noise: n ~ N(0, I), same shape (drawn by the caller from its generator).
        eta: amount of ancestral noise (1 = full ancestral sampling).
    """
    sigma_down, sigma_up = ancestral_sigmas(sigma_from, sigma_to, eta)
    sigma_down, sigma_up = sigma_down.to(x.device), sigma_up.to(x.device)
    return euler_step(x, denoised, sigma_from, sigma_down) + sigma_up * noise

