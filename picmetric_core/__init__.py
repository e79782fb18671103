"""PicMetric's core: everything that is not UI."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU features) is noise for users of the app and CLI.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
