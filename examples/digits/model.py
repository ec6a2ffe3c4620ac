"""The digit model: nine 28×28 uint8 images in, nine int64 labels out (Ferry's demo model,
trained once on scikit-learn's digits and cached)."""
from ferry.models.digits import setup  # noqa: F401  (ferry.worker calls setup())
