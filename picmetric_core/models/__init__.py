"""The networks: the classifier, the YOLO detector, MTCNN, their weight files and the compiled forward passes."""
