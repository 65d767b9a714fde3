"""Images in, multi-scale features out: image reading (:mod:`.images`), :class:`FeatureExtractor`
(:mod:`.extractor`), the automatic engine choice (:mod:`.engine_choice`), the feature-file format
(:mod:`.feature_files`), the overlapped batch pipeline (:mod:`.pipeline`) and the classifier check
(:mod:`.classifier`). See docs/extraction.md."""
