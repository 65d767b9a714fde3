"""``cvx2 bench``: this backbone against timm, Hugging Face, ONNX Runtime and OpenVINO in one run, as a table with
ratios (:mod:`.run`); its options as data (:mod:`.options`, no torch); the end-to-end extraction jobs
(:mod:`.extract`); and the FCMAE measurements behind docs/fcmae.md. See docs/performance.md."""
