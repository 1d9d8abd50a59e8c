"""Feedback pipeline: joins production feedback to predictions and tracks real model quality."""

import os
import sys

# NumPy asks Linux for transparent huge pages for every large array. Where the kernel compacts
# memory on such a request (``defrag`` set to ``madvise``, the usual default) and free memory is
# fragmented, as on a host whose page cache fills its memory, a day's 10M-row columns stall
# there for seconds. Asking for ordinary pages is steady: measured on the 10M labeling step,
# 3.3 s against 4.4 s (median of nine). ``NUMPY_MADVISE_HUGEPAGE=1`` set by the user wins.
if "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
    os.environ["NUMPY_MADVISE_HUGEPAGE"] = "0"
    if "numpy" in sys.modules:  # imported before this package: it read the variable already
        sys.modules["numpy"]._core.multiarray._set_madvise_hugepage(False)
