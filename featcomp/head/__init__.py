"""The compressibility head (layer 2): analysis transform, learned quantization scale, entropy bottleneck.

One module per part: :mod:`featcomp.head.config` (:class:`HeadConfig`, no torch),
:mod:`featcomp.head.layers` (GDN, channel-wise linear maps), :mod:`featcomp.head.trainable`
(:class:`CompressibleHead`, :class:`HeadOutput`, :func:`init_from_classifier`) and
:mod:`featcomp.head.frozen` (:class:`FrozenHead`). Every name stays importable from ``featcomp.head``.
The entropy model is the registered kind's trainable half (:mod:`featcomp.entropy.trainable`).

Implements the head of "End-to-end learning of compressible features" (Singh, Abu-El-Haija, Johnston,
Ballé, Shrivastava, Toderici, ICIP 2020, arXiv:2007.11797): backbone features ``x`` pass through an
analysis transform ``y = g_a(x)`` and a per-channel quantization scale ``s`` (the "gain"); the latent
``y / s`` is quantized to integers and entropy-coded with the factorized prior of Ballé et al. 2018
(arXiv:1802.01436, :class:`featcomp.entropy.EntropyBottleneck`). An optional synthesis transform
``g_s`` maps the quantized latent back to the backbone's feature space (for the ``distill`` and
``reconstruct`` objectives).

Quantization during training (paper, Sec. 2):

* the **rate** path uses additive uniform noise ``U(-1/2, 1/2)`` (a differentiable upper bound of the
  bits the rounded latent costs);
* the **objective** path uses straight-through rounding by default (``objective_quant="ste"``): the
  objective sees exactly the values that will be stored, with identity gradients. ``"noise"`` feeds the
  noisy latent to the objective instead (the paper's variant for the rate term only).

Units: ``HeadOutput.bits`` is the entropy model's cost of each example's whole latent in **bits**
(summed over channels and any time/space positions), shape ``(N,)``.

After training, :meth:`CompressibleHead.freeze` returns a :class:`FrozenHead`: the analysis weights, the
frozen :class:`featcomp.entropy.EntropyCodec` (integer CDF tables and a digest) and the dequantization
``features = (k + offsets) * scale``. Its integer latents ``k`` are exactly what
``codec.compress_symbols`` codes; tables are never rebuilt on the decoding side.

Works on ``(N, C)``, ``(N, C, T)`` and ``(N, C, H, W)``: every transform acts on the channel axis 1
(a 1x1 convolution), positions are independent.
"""

from featcomp.head.config import ANALYSES, OBJECTIVE_QUANT, SYNTHESES, HeadConfig
from featcomp.head.frozen import FrozenHead, frozen_state
from featcomp.head.layers import GDN, ChannelLinear, NonnegativeParameter
from featcomp.head.trainable import CompressibleHead, HeadOutput, init_from_classifier

__all__ = [
    "HeadConfig",
    "HeadOutput",
    "GDN",
    "NonnegativeParameter",
    "ChannelLinear",
    "CompressibleHead",
    "FrozenHead",
    "frozen_state",
    "init_from_classifier",
    "ANALYSES",
    "SYNTHESES",
    "OBJECTIVE_QUANT",
]
