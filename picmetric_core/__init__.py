"""PicMetric's core, everything that is not UI: image bytes in, stored and searchable results out.

See docs/architecture.md for the flow and what each module and package does.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU features) is noise for users of the app and CLI.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
