"""Fused kernels of the ConvNeXt block, and the dispatcher that picks them per call.

``Block.forward`` (cvx2_backbone/models/convnext.py) is the official formulation in plain torch ops.
Before running it, the block asks :func:`fused_block_kernel` whether a fused kernel computes the
same function faster for this call:

* ``onednn_inference`` / ``blas_inference`` (:mod:`.block`): CPU, no gradient needed, fp32 (and
  bf16/fp16 where the CPU runs them natively): the bias and activation fused into pwconv1, the
  bias and the residual into pwconv2, GRN's statistics in one blocked fp32 pass (:mod:`.grn`),
  GRN's scale and beta and the layer scale folded where that touches less memory; the matrix
  products on oneDNN's fused linear (AVX-512 CPUs) or torch's BLAS (other CPUs, :mod:`.linear`);
* ``folded_autograd``: training, CUDA, and half precision without native CPU support: the same
  folds on standard differentiable ops; on CPU the pointwise layers run as 1x1 convolutions where
  torch runs those on oneDNN;
* ``plain``: everything else.

Switches, any of which selects the plain ops: ``fast_path='off'`` on the backbone (or
``set_reference_path(True)``), the environment variable ``CVX2_FAST_PATH=0``,
``torch.backends.mkldnn.enabled = False`` or ``with torch.backends.mkldnn.flags(enabled=False):``
(for CPU tensors: every CPU fast kernel is a oneDNN one), and ``with cvx2_backbone.ops.plain_ops():``
for a block of code. Tracing, compiling and exporting always get the plain ops (``torch.compile``,
``torch.export``, ``torch.onnx.export`` with either exporter, ``torch.jit.trace``, ``torch.fx``),
so graphs hold only standard ops and nothing branches on the batch size.

``with cvx2_backbone.ops.fp16_safe_statistics():`` makes the plain GRN compute its norms on inputs scaled by
their maxima (same values in fp32; ``cvx2 export`` traces under it so that fp16 graphs do not overflow).

``with cvx2_backbone.ops.record_kernels() as counts:`` counts which kernel every block call ran
(``counts['onednn_inference']``, ...); the tests assert it.
"""
from cvx2_backbone.ops.block import fused_block_kernel
from cvx2_backbone.ops.dispatch import (BLAS_INFERENCE, FAST_PATH_ENV, FOLDED_AUTOGRAD, KERNELS, ONEDNN_INFERENCE,
                                        PLAIN, fp16_safe_statistics, fp16_safe_statistics_enabled, plain_ops,
                                        record_kernels)
from cvx2_backbone.ops.grn import scaled_response_norm

__all__ = ["BLAS_INFERENCE", "FAST_PATH_ENV", "FOLDED_AUTOGRAD", "KERNELS", "ONEDNN_INFERENCE", "PLAIN",
           "fp16_safe_statistics", "fp16_safe_statistics_enabled", "fused_block_kernel", "plain_ops",
           "record_kernels", "scaled_response_norm"]
