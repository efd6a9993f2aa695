"""AMD-Net's layers and losses (Ge et al., "Semantically Enhanced Attention Map-Driven Occluded Person
Re-identification", Electronics Letters 2024), toolbox-free.

- :class:`SpatialFrequencyInteraction` (SIM, Eq. 3-4): FFT of the map, a convolution on the phase, inverse FFT,
  mixed with the input by alpha.
- :class:`PartAttentionHead` (PAGB, Eq. 1): SIM then a 1x1 convolution and a softmax to the part attention maps.
- :func:`part_attention_loss` (Eq. 2): label-smoothed pixel-wise cross-entropy against human-parsing labels.
- :class:`GatedConv2d`, :class:`TaylorBasisBlock`, :class:`TaylorFeatureFilter` (TFF, Eq. 8-11).
- :func:`attention_pooling` (Eq. 6-7), :func:`visibility_scores` (threshold gamma).
- :func:`part_soft_distance` (Eq. 12) and :func:`part_soft_triplet_loss` (Eq. 13).

Where the paper is ambiguous the choice is stated in the docstring and in projects/AMDNet/README.md.
Parts are indexed 1..K in the paper; here part k is index k - 1 of the part axis, so the head is index 0.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

PART_NAMES = ("head", "arms", "trunk", "legs", "feet")


class SpatialFrequencyInteraction(nn.Module):
    """SIM (Sec. "Spatial-frequency Interaction Module", Eq. 3-4)::

        F_mag, F_pha = FFT(G)                                  (Eq. 3)
        F_out = alpha * IFFT(F_mag * exp(i * conv_b(F_pha))) + (1 - alpha) * G     (Eq. 4)

    Eq. 4 writes IFFT(F_pha W_b); the amplitude is not mentioned there but Eq. 3 computes it, and an inverse FFT
    of a phase alone would discard every magnitude, so the convolved phase is recombined with the unchanged
    amplitude (README). The 2-D real FFT runs over (h, w) per channel (``norm="ortho"``); ``conv_b`` is a
    ``kernel_size`` convolution over the phase maps (C -> C, no bias, initialised to the identity so SIM starts
    as the identity map; ``identity_init=False``: PyTorch's default init).

    Args: channels C; alpha (0.35 in the paper); kernel_size (1; odd). Shapes: (B, C, h, w) -> (B, C, h, w).
    Raises ValueError for alpha outside [0, 1] or an even kernel size.
    """

    def __init__(self, channels: int, alpha: float = 0.35, kernel_size: int = 1, identity_init: bool = True):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"MODEL.AMD.SIM.ALPHA must be in [0, 1], got {alpha}")
        if kernel_size % 2 != 1:
            raise ValueError(f"MODEL.AMD.SIM.KERNEL must be odd, got {kernel_size}")
        self.alpha = float(alpha)
        self.phase_conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=False)
        if identity_init:
            with torch.no_grad():
                self.phase_conv.weight.zero_()
                k = kernel_size // 2
                self.phase_conv.weight[torch.arange(channels), torch.arange(channels), k, k] = 1.0

    @staticmethod
    def amplitude_phase(g: torch.Tensor, rel_eps: float = 1e-4):
        """Eq. 3: (amplitude, phase) of the 2-D real FFT of ``g`` (B, C, h, w), each (B, C, h, w // 2 + 1), in
        float32. A bin whose amplitude is below ``rel_eps`` times its map's largest gets phase 0 and no gradient:
        the angle's gradient is 1 / amplitude, which explodes on near-empty bins once W_b mixes channels."""
        spec = torch.fft.rfft2(g.float(), norm="ortho")
        amp = spec.abs()
        floor = rel_eps * amp.detach().flatten(2).amax(2)[..., None, None].clamp(min=1e-12)
        small = amp.detach() < floor
        safe = torch.where(small, torch.ones_like(spec), spec)
        pha = torch.where(small, torch.zeros_like(amp), torch.angle(safe))
        return amp, pha

    #: True: compute Eq. 3-4 with real DFT matrices instead of torch.fft (set by ``occreid export``: ONNX has no
    #: complex tensors, and torch's exporters cannot export rfft2 / angle / polar on them). Same numbers to float
    #: rounding (tests/test_export.py); the FFT is faster, so training and evaluation keep it.
    real_dft = False

    @staticmethod
    def _dft_matrices(h: int, w: int, device, dtype=torch.float32):
        """cos / sin of the 2-D DFT angles: (C_x, S_x) (h, h) over rows, (C_y, S_y) (w, w // 2 + 1) over the half
        spectrum of columns."""
        def cos_sin(a, b, n):
            k = (a[:, None] * b[None, :]) % n                    # exact integer angle index, then float64
            t = 2 * math.pi * k.double() / n
            c, s = torch.cos(t), torch.sin(t)
            # exact 0 / +-1 where the angle is a multiple of pi / 2 (the DC and Nyquist bins of a real map are real)
            c = torch.where(c.abs() < 1e-9, torch.zeros_like(c), c)
            s = torch.where(s.abs() < 1e-9, torch.zeros_like(s), s)
            return c.to(dtype), s.to(dtype)

        x = torch.arange(h, device=device)
        y = torch.arange(w, device=device)
        v = torch.arange(w // 2 + 1, device=device)
        return (*cos_sin(x, x, h), *cos_sin(y, v, w))

    def _forward_real_dft(self, g: torch.Tensor, rel_eps: float = 1e-4) -> torch.Tensor:
        """Eq. 3-4 in real arithmetic: rfft2 / angle / polar / irfft2 (norm "ortho") written with DFT matrices.

        Forward: X[u, v] = (hw)^-1/2 sum_x,y g[x, y] e^{-2 pi i (ux / h + vy / w)}, v <= w / 2; inverse: the Hermitian
        real inverse, each v in 1 .. ceil(w / 2) - 1 counted twice (torch's irfft2)."""
        b, c, h, w = g.shape
        cx, sx, cy, sy = self._dft_matrices(h, w, g.device)
        scale = 1.0 / math.sqrt(h * w)
        gf = g.float()
        ar, ai = gf @ cy, -(gf @ sy)                               # DFT over columns (y): (B, C, h, w//2+1)
        xr = (cx @ ar + sx @ ai) * scale                           # over rows (x): e^{-i t} = cos t - i sin t
        xi = (cx @ ai - sx @ ar) * scale
        xi = torch.where(xi == 0, torch.zeros_like(xi), xi)       # -0.0 -> +0.0: angle(-a + 0i) = pi, as torch.angle
        amp = torch.sqrt(xr * xr + xi * xi)
        floor = rel_eps * amp.detach().flatten(2).amax(2)[..., None, None].clamp(min=1e-12)
        small = amp.detach() < floor
        pha = torch.where(small, torch.zeros_like(amp), torch.atan2(xi, xr))
        pha = self.phase_conv(pha)
        yr, yi = amp * torch.cos(pha), amp * torch.sin(pha)       # polar
        zr = cx.t() @ yr - sx.t() @ yi                             # inverse over rows: e^{+i t}
        zi = cx.t() @ yi + sx.t() @ yr
        weight = torch.full((w // 2 + 1,), 2.0, device=g.device)
        weight[0] = 1.0
        if w % 2 == 0:
            weight[-1] = 1.0
        freq = ((zr * weight) @ cy.t() - (zi * weight) @ sy.t()) * scale   # Hermitian real inverse over columns
        return freq

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=g.device.type, enabled=False):   # FFT, angle and polar in float32
            if self.real_dft:
                freq = self._forward_real_dft(g)
            else:
                amp, pha = self.amplitude_phase(g)
                spec = torch.polar(amp, self.phase_conv(pha))
                freq = torch.fft.irfft2(spec, s=g.shape[-2:], norm="ortho")
        return (self.alpha * freq + (1.0 - self.alpha) * g.float()).to(g.dtype)


class PartAttentionHead(nn.Module):
    """Part Attention Generation Branch (Eq. 1): P = softmax(conv1x1(SIM(G))) over K + 1 channels.

    Channel 0 is the background, channels 1..K the parts (head, arms, trunk, legs, feet for K = 5). Eq. 1 writes
    the softmax over the k part maps only, but Eq. 2's labels give background pixels the class 0, which a
    softmax over the parts alone cannot predict; the background channel follows BPBreID, on which the
    authors' code (SA-ReID) builds (README).

    Args: channels C of G; num_parts K; sim: a :class:`SpatialFrequencyInteraction` or None (Table 2 "w/o SIM").
    Shapes: G (B, C, h, w) -> (B, K + 1, h, w), probabilities summing to 1 over dim 1.
    """

    def __init__(self, channels: int, num_parts: int = 5, sim: nn.Module = None):
        super().__init__()
        self.num_parts = num_parts
        self.sim = sim
        self.attention_conv = nn.Conv2d(channels, num_parts + 1, 1)   # W_a, Eq. 1

    def logits(self, g: torch.Tensor) -> torch.Tensor:
        return self.attention_conv(self.sim(g) if self.sim is not None else g)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.logits(g).softmax(dim=1)


def parsing_targets(labels: torch.Tensor, size) -> torch.Tensor:
    """Human-parsing labels (B, H, W) int in {0..K} (-1: image without label) -> (B, h, w) long at the attention
    map's size: each cell takes the class covering most of it (one-hot, adaptive average pooling, argmax, as
    BPBreID downsamples its masks); an unlabelled image stays -1 everywhere."""
    labels = labels.long()
    unlabelled = (labels < 0).flatten(1).all(1)
    k1 = int(labels.clamp(min=0).max().item()) + 1
    onehot = F.one_hot(labels.clamp(min=0), k1).permute(0, 3, 1, 2).float()
    out = F.adaptive_avg_pool2d(onehot, size).argmax(1)
    out[unlabelled] = -1
    return out


def part_attention_loss(logits: torch.Tensor, targets: torch.Tensor, sigma: float = 0.15) -> torch.Tensor:
    """Eq. 2: label-smoothed pixel-wise cross-entropy of the part attention maps against parsing labels.

    q_k = 1 - sigma + sigma / N for the labelled class, sigma / N otherwise. The paper calls N "the batchsize";
    in label smoothing it is the number of classes (K + 1 here), which is what is used (README). The paper sums
    over pixels; this averages over the labelled pixels of the batch (the sum would scale the learning rate by
    the map size). Pixels with target -1 (images without a label) are ignored.

    Args: logits (B, K + 1, h, w) before the softmax; targets (B, h, w) long in {-1, 0..K}; sigma.
    Returns a scalar; 0 (with a graph) when no pixel is labelled.
    """
    n = logits.shape[1]
    valid = targets >= 0
    if not valid.any():
        return logits.sum() * 0.0
    logp = logits.log_softmax(1).permute(0, 2, 3, 1)[valid]          # (P, N)
    t = targets[valid]
    q = torch.full_like(logp, sigma / n)
    q[torch.arange(len(t)), t] += 1.0 - sigma
    return -(q * logp).sum(1).mean()


class GatedConv2d(nn.Module):
    """Gated convolution (Yu et al., free-form inpainting): conv_f(x) * sigmoid(conv_g(x)), the soft gate that
    TFF uses to suppress background clutter. Shapes: (B, C, h, w) -> (B, C_out, h, w)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.feature = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.gate = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(x) * torch.sigmoid(self.gate(x))


class TaylorBasisBlock(nn.Module):
    """One basis block of TFF (Eq. 8-11), the second-order Taylor finite-difference step::

        tau_{j+1} = tau_j + R(tau_j)                  (the residual mapping; Delta tau_j = R(tau_j))
        tau_{j+2} = tau_{j+1} + tau_gate + 3 Delta tau_j,   tau_gate = GatedConv(tau_j)   (Eq. 11)

    tau_gate stands for -2 f(tau_j, x_j) h of Eq. 10, f being evaluated at tau_j. R is conv3x3-BN-ReLU-conv3x3-BN
    (a ResNet basic block's residual, "multiple convolutional layers"). With ``zero_init`` the last BN's scale and
    the gated convolution's feature conv start at 0, so a block starts as the identity on pretrained features
    (Goyal et al.'s zero-init residual); the paper gives no initialisation. Shapes: (B, C, h, w) -> same.
    """

    def __init__(self, channels: int, zero_init: bool = True):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.gated = GatedConv2d(channels, channels, 3)
        if zero_init:
            nn.init.zeros_(self.residual[-1].weight)
            nn.init.zeros_(self.gated.feature.weight)
            nn.init.zeros_(self.gated.feature.bias)

    def forward(self, tau: torch.Tensor) -> torch.Tensor:
        delta = self.residual(tau)
        tau1 = tau + delta
        return tau1 + self.gated(tau) + 3.0 * delta


class TaylorFeatureFilter(nn.Sequential):
    """TFF: ``num_blocks`` :class:`TaylorBasisBlock` in sequence (3 in the paper). (B, C, h, w) -> same."""

    def __init__(self, channels: int, num_blocks: int = 3, zero_init: bool = True):
        super().__init__(*[TaylorBasisBlock(channels, zero_init) for _ in range(num_blocks)])


def attention_pooling(fmap: torch.Tensor, parts: torch.Tensor):
    """Eq. 6-7 on F (B, C, h, w) and the part maps p_1..p_K (B, K, h, w)::

        p_t = max_k p_k;   f_i = sum_hw F p_i / (h w), i in {t, 1..K};   f_g = GAP(F);   f_c = f_1 (+) .. (+) f_K

    Returns dict f_t (B, C), f_parts (B, K, C), f_c (B, K C), f_g (B, C), p_t (B, h, w). The division is by
    h w, as Eq. 6 writes it, not by the map's mass."""
    b, c, h, w = fmap.shape
    p_t = parts.max(dim=1).values
    f_parts = torch.einsum("bchw,bkhw->bkc", fmap, parts) / (h * w)
    f_t = torch.einsum("bchw,bhw->bc", fmap, p_t) / (h * w)
    return {"f_t": f_t, "f_parts": f_parts, "f_c": f_parts.flatten(1), "f_g": fmap.mean(dim=(2, 3)), "p_t": p_t}


def visibility_scores(parts: torch.Tensor, gamma: float = 0.4) -> torch.Tensor:
    """Part visibility: part k is visible when some pixel of p_k exceeds gamma (0.4 in the paper).
    (B, K, h, w) -> (B, K) float in {0, 1}, without gradient."""
    return (parts.detach().flatten(2).amax(2) > gamma).float()


def part_weights(num_parts: int, beta_head: float = 0.5, device=None) -> torch.Tensor:
    """Eq. 12's weights (K,): 1 + beta_head for the head (part 1), 1 for the others."""
    w = torch.ones(num_parts, device=device)
    w[0] += beta_head
    return w


def part_soft_distance(fa: torch.Tensor, fb: torch.Tensor, beta_head: float = 0.5, va: torch.Tensor = None,
                       vb: torch.Tensor = None, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 12: d(a, b) = [(1 + beta) d_eu(f_1^a, f_1^b) + sum_{k>=2} d_eu(f_k^a, f_k^b)] / (K + beta).

    (Eq. 12 prints f_2^b in the head term, a typo for f_1^b.) With visibility scores ``va`` (Na, K), ``vb`` (Nb, K)
    the weights become w_k v_k^a v_k^b and the sum is divided by their total (a pair with no part visible in both
    falls back to all parts); without, it is Eq. 12 exactly.

    Args: fa (Na, K, D), fb (Nb, K, D). Returns (Na, Nb). Raises ValueError when K or D differ.
    """
    if fa.shape[1:] != fb.shape[1:]:
        raise ValueError(f"part features must agree in (K, D): {tuple(fa.shape[1:])} vs {tuple(fb.shape[1:])}")
    k = fa.shape[1]
    d = torch.stack([euclidean(fa[:, i], fb[:, i], eps) for i in range(k)], dim=2)   # (Na, Nb, K)
    w = part_weights(k, beta_head, fa.device).expand_as(d)
    if va is not None and vb is not None:
        both = va[:, None, :] * vb[None, :, :]
        none = both.sum(2, keepdim=True) == 0
        w = w * torch.where(none, torch.ones_like(both), both)
    return (w * d).sum(2) / w.sum(2)


def euclidean(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pairwise Euclidean distance (Nx, D), (Ny, D) -> (Nx, Ny), with a gradient at 0 distance."""
    d2 = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2 * x @ y.t()
    return d2.clamp(min=eps).sqrt()


def batch_hard(dist: torch.Tensor, targets: torch.Tensor):
    """Hardest positive and negative distance per anchor (Hermans et al.). dist (N, N), targets (N,) ->
    (d_ap (N,), d_an (N,)). Raises ValueError when an anchor has no negative in the batch."""
    n = dist.shape[0]
    same = targets.view(n, 1).eq(targets.view(1, n))
    if same.all(1).any():
        raise ValueError("batch-hard triplet: an anchor has no negative in the batch (use the P x K sampler)")
    d_ap = torch.where(same, dist, torch.full_like(dist, -float("inf"))).max(1).values
    d_an = torch.where(~same, dist, torch.full_like(dist, float("inf"))).min(1).values
    return d_ap, d_an


def part_soft_triplet_loss(f_parts: torch.Tensor, targets: torch.Tensor, margin: float = 0.3,
                           beta_head: float = 0.5) -> torch.Tensor:
    """Eq. 13: batch-hard triplet [d(a,p) - d(a,n) + M]_+ on the part-soft distance of Eq. 12, averaged over the
    anchors (Eq. 13 sums; the mean only rescales). f_parts (B, K, D), targets (B,) -> scalar."""
    dist = part_soft_distance(f_parts, f_parts, beta_head)
    d_ap, d_an = batch_hard(dist, targets)
    return F.relu(d_ap - d_an + margin).mean()


def per_part_hard_triplet_loss(f_parts: torch.Tensor, targets: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Table 2 "r/w hard-triplet Loss": a batch-hard triplet on each part's own distance, averaged over the K
    parts (the per-part supervision the paper argues against). f_parts (B, K, D) -> scalar."""
    losses = []
    for i in range(f_parts.shape[1]):
        d_ap, d_an = batch_hard(euclidean(f_parts[:, i], f_parts[:, i]), targets)
        losses.append(F.relu(d_ap - d_an + margin).mean())
    return torch.stack(losses).mean()
