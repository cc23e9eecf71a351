"""Vision through the same loop: demo images, safe decoding and image features, YOLO models.

Importing this package imports neither torch nor Ultralytics: ``pipelines.vision.yolo`` does,
after ``pipelines.vision.offline.prepare_offline`` has switched off everything that would go
online. ``data`` and ``images`` need only numpy, OpenCV and Pillow.
"""
