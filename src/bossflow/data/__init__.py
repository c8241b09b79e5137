"""Built-in data sets for training teachers: scikit-learn's 8×8 digits (shipped in the
package) and the 2-D eight Gaussians.

Every sampler takes an explicit ``torch.Generator``; nothing reads global random state.
"""

from .digits import DIGITS_SHAPE, load_digits
from .toy import eight_gaussians

__all__ = ["DIGITS_SHAPE", "eight_gaussians", "load_digits"]
