"""PicMetric's core, everything that is not UI: image bytes in, stored and searchable results out.

See docs/architecture.md for the flow and what each module and package does.
"""

import contextlib
import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU features) is noise for users of the app and CLI.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# aiortc's SRTP library (the Live page) crashes the process when it is loaded after TensorFlow: it then
# meets the OpenSSL symbols TensorFlow brought in. Loaded first, both work; any process may load both
# (the app, the tests), so it is loaded here, before anything imports TensorFlow (14 ms).
with contextlib.suppress(ImportError):  # not installed where there is no Live page (the GPU check's machine)
    import pylibsrtp  # noqa: F401
