"""CFIT4SRec's frequency-domain filters as pure functions (Zhang et al., 2023; zhangyichi1Z/CFIT4SRec).

A view of the embedding ``X`` (B, T, d) is ``|ifft2(ifftshift(fftshift(fft2(X)) ⊙ M))|`` with the 2-D
FFT over (T, d) and a 0/1 mask ``M`` (T, d) on the centred spectrum. Masks are functions of the
distance of each cell from the centre ``(T // 2, d // 2)``, as the code's ``create*Filter``.

:func:`frequency_filter` is the formula as written; :func:`filter_unshifted` is what the augmenter
runs: the shifts are permutations, so ``ifftshift(fftshift(F) ⊙ M) = F ⊙ ifftshift(M)`` exactly, and
shifting the (constant) mask once replaces two rolls of the complex spectrum per view.
"""

from __future__ import annotations

import torch
from torch import Tensor


def radius(t: int, d: int) -> Tensor:
    """(T, d) float64: ``sqrt((i − T//2)² + (j − d//2)²)`` for row i, column j."""
    i = torch.arange(t, dtype=torch.float64).view(-1, 1) - t // 2
    j = torch.arange(d, dtype=torch.float64).view(1, -1) - d // 2
    return (i ** 2 + j ** 2).sqrt()


def low_pass(t: int, d: int, r: float) -> Tensor:
    """(T, d) mask: 1 where the radius is ≤ r (keep the low frequencies)."""
    return (radius(t, d) <= r).float()


def high_pass(t: int, d: int, r: float) -> Tensor:
    """(T, d) mask: 0 where the radius is < r (drop the low frequencies)."""
    return (radius(t, d) >= r).float()


def band_stop(t: int, d: int, centre: int, width: float = 2.0) -> Tensor:
    """(T, d) mask: 0 on the ring ``|radius − centre| ≤ width/2``, 1 elsewhere; at the last centre
    ``min(T, d) // 2`` also 0 beyond the ring (the code's special case: the ring has no outside)."""
    rad = radius(t, d)
    keep = rad < centre - width / 2
    if centre != min(t, d) // 2:
        keep = keep | (rad > centre + width / 2)
    return keep.float()


def band_stops(t: int, d: int, width: float = 2.0) -> Tensor:
    """(C, T, d): :func:`band_stop` for every centre 0..min(T, d) // 2 (the code's ``BSA`` list)."""
    return torch.stack([band_stop(t, d, c, width) for c in range(min(t, d) // 2 + 1)])


def frequency_filter(x: Tensor, mask: Tensor) -> Tensor:
    """(…, T, d) real, (…, T, d) or (T, d) mask → (…, T, d) ``|ifft2(ifftshift(fftshift(fft2(x)) ⊙ mask))|``.

    Shifts over the last two dimensions only (the code shifts every dimension, batch included; the
    batch shift cancels, since the mask is the same for every row). Non-negative output.
    """
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    filtered = torch.fft.ifftshift(spectrum * mask.to(x.dtype), dim=(-2, -1))
    return torch.fft.ifft2(filtered).abs()


def unshift(mask: Tensor) -> Tensor:
    """(…, T, d) mask on the centred spectrum → the same mask on the unshifted one (``ifftshift``)."""
    return torch.fft.ifftshift(mask, dim=(-2, -1))


def filter_unshifted(x: Tensor, masks: Tensor) -> Tensor:
    """(B, T, d) real, (k, T, d) masks already :func:`unshift`-ed → (k, B, T, d)
    ``|ifft2(fft2(x) ⊙ masks[i])|``: :func:`frequency_filter` of each (centred) mask, one ``fft2`` for all."""
    spectrum = torch.fft.fft2(x)  # (B, T, d)
    return torch.fft.ifft2(spectrum.unsqueeze(0) * masks.to(x.dtype).unsqueeze(1)).abs()
