"""The networks, image in and typed results out: the classifier, the YOLO detector and MTCNN, with their
weight files and compiled forward passes."""
