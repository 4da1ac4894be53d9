"""Normalizers PyTorch does not ship: batch renormalization (over the whole batch or over
virtual batches), ghost batch norm and noisy batch norm (Santurkar et al.'s control).

All follow PyTorch's batch-norm conventions, so the factory treats them like BatchNorm:
per-channel `weight` (gamma) and `bias` (beta) that `norm.affine` may remove, buffers
`running_mean`, `running_var` (updated with the unbiased batch variance, `momentum` = weight
of the new batch) and `num_batches_tracked`; input (N, C) or (N, C, H, W).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def _channel_dims(x: torch.Tensor) -> tuple[list[int], tuple[int, ...]]:
    """Reduction dims for per-channel statistics and the shape that broadcasts them."""
    return [0, *range(2, x.dim())], (1, x.shape[1], *([1] * (x.dim() - 2)))


class _RunningStatsNorm(nn.Module):
    def __init__(self, channels: int, eps: float, momentum: float):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def _affine(self, x_hat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if self.weight is not None:
            x_hat = x_hat * self.weight.view(shape)
        if self.bias is not None:
            x_hat = x_hat + self.bias.view(shape)
        return x_hat

    @torch.no_grad()
    def _update(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(unbiased_var, self.momentum)
        self.num_batches_tracked += 1

    def _eval(self, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return (x - self.running_mean.view(shape)) * torch.rsqrt(
            self.running_var.view(shape) + self.eps)


def _virtual_batches(x: torch.Tensor, size: Optional[int]) -> list[torch.Tensor]:
    """`x` as consecutive virtual batches of `size` examples: chunks of shape (k, v, C, ...),
    so one reduction serves k equal virtual batches, and a shorter last virtual batch (when
    `size` does not divide the batch) as a chunk alone; `[x]` itself when one virtual batch
    holds the whole batch (size None or at least the batch)."""
    if size is None or size >= x.shape[0]:
        return [x]
    whole = x.shape[0] // size * size
    chunks = [x[:whole].unflatten(0, (-1, size))]
    if whole < x.shape[0]:
        chunks.append(x[whole:].unsqueeze(0))
    return chunks


class _VirtualBatchNorm(_RunningStatsNorm):
    """Batch norm over virtual batches of `virtual_batch_size` examples (None: the whole
    batch) in training, with an optional per-virtual-batch correction `x_hat * r + d`
    (`_correction`). Each virtual batch is normalised with its own mean and biased variance;
    the running statistics take one update per SGD batch, with the mean over virtual batches
    of their means and unbiased variances. Eval mode uses the running statistics like BN."""

    def __init__(self, channels: int, eps: float, momentum: float,
                 virtual_batch_size: Optional[int]):
        super().__init__(channels, eps, momentum)
        self.virtual_batch_size = virtual_batch_size

    def _correction(self, mean: torch.Tensor, std: torch.Tensor, shape: tuple[int, ...]
                    ) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """(r, d) for virtual batches with these statistics, or None (plain batch norm)."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims, shape = _channel_dims(x)
        if not self.training:
            return self._affine(self._eval(x, shape), shape)
        outputs, means, variances = [], [], []
        for chunk in _virtual_batches(x, self.virtual_batch_size):
            stacked = chunk.dim() == x.dim() + 1  # (k, v, C, ...)
            chunk_dims = [d + 1 for d in dims] if stacked else dims
            mean = chunk.mean(chunk_dims, keepdim=True)
            var = chunk.var(chunk_dims, unbiased=False, keepdim=True)
            std = torch.sqrt(var + self.eps)
            x_hat = (chunk - mean) / std
            correction = self._correction(mean.detach(), std.detach(), shape)
            if correction is not None:  # constants in the gradient (Ioffe 2017)
                x_hat = x_hat * correction[0] + correction[1]
            outputs.append(x_hat.flatten(0, 1) if stacked else x_hat)
            count = (chunk[0] if stacked else chunk).numel() // x.shape[1]
            means.append(mean.detach().reshape(-1, x.shape[1]))
            variances.append((var.detach() * count / max(1, count - 1)).reshape(-1, x.shape[1]))
        self._update(torch.cat(means).mean(0), torch.cat(variances).mean(0))
        return self._affine(torch.cat(outputs) if len(outputs) > 1 else outputs[0], shape)


class GhostBatchNorm(_VirtualBatchNorm):
    """Ghost batch norm (Hoffer et al. 2017): batch norm whose training statistics come from
    each virtual batch of `virtual_batch_size` examples, as `_VirtualBatchNorm` describes."""


class BatchRenorm(_VirtualBatchNorm):
    """Batch renormalization (Ioffe 2017). In training, per virtual batch B (the whole batch
    unless `virtual_batch_size` is given: ghost batch renorm, Ioffe's per-GPU statistics):

        x_hat = (x - mu_B) / sigma_B * r + d,
        r = clip(sigma_B / sigma, 1/r_max, r_max),  d = clip((mu_B - mu) / sigma, -d_max, d_max)

    with r and d treated as constants in the gradient, sigma_B = sqrt(biased var_B + eps) and
    sigma = sqrt(running_var + eps), the running statistics as they were before this SGD
    batch. r_max ramps linearly from 1 and d_max from 0 to their final values over
    `warmup_steps` training batches (Ioffe relaxes them gradually; at the start the layer is
    plain batch norm). Eval mode uses the running statistics like BN.
    """

    def __init__(self, channels: int, eps: float, momentum: float, r_max: float, d_max: float,
                 warmup_steps: int, virtual_batch_size: Optional[int] = None):
        super().__init__(channels, eps, momentum, virtual_batch_size)
        self.r_max, self.d_max, self.warmup_steps = r_max, d_max, warmup_steps

    def limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_max, d_max) now, from the batches seen so far (a buffer, so it resumes); 0-dim
        tensors on the buffer's device, so the ramp costs no host sync per forward."""
        if self.warmup_steps == 0:
            ramp = torch.ones((), device=self.num_batches_tracked.device)
        else:
            ramp = (self.num_batches_tracked / self.warmup_steps).clamp(max=1.0)
        return 1.0 + (self.r_max - 1.0) * ramp, self.d_max * ramp

    def _correction(self, mean: torch.Tensor, std: torch.Tensor, shape: tuple[int, ...]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        r_max, d_max = self.limits()
        running_std = torch.sqrt(self.running_var + self.eps).view(shape)
        r = torch.minimum(torch.maximum(std / running_std, 1 / r_max), r_max)
        d = torch.minimum(torch.maximum((mean - self.running_mean.view(shape)) / running_std,
                                        -d_max), d_max)
        return r, d


class NoisyBatchNorm(nn.BatchNorm1d):
    """Batch norm whose output is made unstable on purpose (Santurkar et al. 2018, sec. 2.1,
    "noisy BatchNorm"): in training, after BN (with gamma/beta), every unit j gets a mean
    shift m_j ~ U(-noise_mean, noise_mean) and a scale s_j ~ U(1, noise_scale), redrawn at
    every step, and every example its own Gaussian noise:

        y_ij = s_j * BN(x)_ij + m_j + noise_std * z_ij,   z_ij ~ N(0, 1)

    so each unit's output distribution has a non-zero mean and a non-unit variance that
    change from step to step (a covariate shift far larger than a plain network's). The draws
    come from the global torch generator, like dropout's masks. Eval mode uses the noise's
    expectation, as inverted dropout does: BN with the running statistics, scaled by
    E[s_j] = (1 + noise_scale) / 2 (E[m_j] = E[z_ij] = 0); plain BN output at test time would
    be 1/E[s] of what the next layer was trained on. A BatchNorm1d for (N, C) and (N, C, H, W) alike: the statistics
    are per channel either way."""

    def __init__(self, channels: int, eps: float, momentum: float, noise_mean: float,
                 noise_scale: float, noise_std: float):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.noise_mean, self.noise_scale, self.noise_std = noise_mean, noise_scale, noise_std

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 4):
            raise ValueError(f"expected 2D or 4D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if not self.training:
            return y * ((1 + self.noise_scale) / 2)
        _, shape = _channel_dims(x)
        shift = (torch.rand(x.shape[1], device=x.device) * 2 - 1) * self.noise_mean
        scale = 1 + torch.rand(x.shape[1], device=x.device) * (self.noise_scale - 1)
        noise = torch.randn_like(y) * self.noise_std
        return y * scale.view(shape) + shift.view(shape) + noise
