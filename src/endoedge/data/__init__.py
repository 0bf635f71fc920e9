"""Files on disk: image decoding, media suffixes, datasets and splits, bundled sample frames,
file hashes and ONNX graph facts; gst-launch quoting. Imports only ``errors``/``spec`` below it."""
