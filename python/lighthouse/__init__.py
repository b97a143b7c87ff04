"""Lighthouse Attention for PyTorch.

Importing the package loads the compiled operator library (torch.ops.lighthouse.*) and registers the
operators' fake kernels and autograd rules; nothing else happens until a function is called.
"""

from . import _library

_library.load()

from . import ops  # noqa: E402  (registers fake kernels and autograd for the loaded operators)
from .attention import lighthouse_attention  # noqa: E402
from .hf import register_hf  # noqa: E402
from .module import LighthouseAttention, set_attention_mode  # noqa: E402

__all__ = ["ops", "lighthouse_attention", "LighthouseAttention", "set_attention_mode", "register_hf"]
__version__ = "0.1.0"
