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

# Arrow's allocator (mimalloc) asks for transparent huge pages too, and gives what it frees back
# to the system within milliseconds: each reuse faults in, and zeroes, whole 2 MiB pages again.
# Reading and validating a 10M night's 17M feedback events spent 17.8 s in the kernel this way,
# against 5.8 s with ordinary pages (22.8 s against 14.1 s in all); whole nights took 9% less
# time. Told not to, mimalloc switches huge pages off for the whole process as Arrow is loaded
# (Linux's ``PR_SET_THP_DISABLE``, which the processes it starts inherit). So it counts only if
# pyarrow (or pandas) is not imported yet; a value the user set wins.
os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")

# NumPy's linear algebra library (OpenBLAS) starts a thread per core, and after each call its
# threads wait for the next one by spinning. A night's calls are small (Evidently's drift tests,
# scikit-learn's checks), so the spinning was all they did there: 1.7% of the machine's samples
# over a 1M night (0.9 s of processor time on a machine that has none to spare), none with one
# thread. Nothing a night does gains from more (training runs on OpenMP), so it has one; forked
# workers are held to one whatever the user set (``parallel``). It counts only if NumPy is not
# imported yet; a value the user set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
