"""A backbone (or a :class:`~cvx2_backbone.extraction.extractor.FeatureExtractor` with its FPN) to ONNX and OpenVINO
IR, verified on the runtimes (:mod:`.onnx`). Whole detectors and segmentors go through mmdeploy
(:mod:`cvx2_backbone.deploy`)."""
