"""Running the exported backbone outside PyTorch: one wrapper per runtime (:mod:`.backbones`: ONNX Runtime,
OpenVINO), shared by extraction, export checks and the benchmark; how outputs are compared (:mod:`.compare`); where
``runtime='auto'`` keeps its measured choices (:mod:`.choice_cache`); and the allocator setting (:mod:`.allocator`).
Nothing is imported here: the runtimes are optional (the ``deploy`` extra)."""
