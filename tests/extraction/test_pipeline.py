"""The overlap machinery of ``cvx2 extract``: order kept, stages bounded, errors and interrupts reach the caller."""
from __future__ import annotations

import threading
import time

import pytest

from cvx2_backbone.extraction.pipeline import BackgroundWriter, prefetched


def test_prefetch_keeps_order_runs_ahead_on_threads_and_stays_bounded():
    started: list[int] = []
    threads: set[str] = set()

    def load(item: int) -> int:
        started.append(item)
        threads.add(threading.current_thread().name)
        time.sleep(0.01 * (item % 3))  # finish out of order
        return item * 10

    results = []
    for result in prefetched(load, range(12), workers=3, ahead=4):
        results.append(result)
        assert len(started) <= len(results) + 4  # never more than `ahead` items beyond what was consumed
    assert results == [10 * i for i in range(12)]
    assert threads and all(name.startswith("cvx2-prefetch") for name in threads)


def test_leaving_a_prefetch_loop_early_cancels_what_has_not_started():
    started: list[int] = []
    loaded = prefetched(lambda item: started.append(item) or item, range(100), workers=1, ahead=2)
    assert next(loaded) == 0
    loaded.close()
    assert len(started) <= 4


def test_writer_writes_in_order_on_its_own_thread():
    written, names = [], set()

    def write(item):
        names.add(threading.current_thread().name)
        written.append(item)

    writer = BackgroundWriter(write, depth=2)
    for item in range(20):
        writer.put(item)
    writer.finish()
    assert written == list(range(20)) and names == {"cvx2-writer"}


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_writer_error_or_interrupt_reaches_the_caller_and_drops_the_rest(error):
    written = []

    def write(item):
        if item == 3:
            raise error
        written.append(item)

    writer = BackgroundWriter(write, depth=1)
    with pytest.raises(type(error)):
        for item in range(50):
            writer.put(item)
        writer.finish()
    with pytest.raises(type(error)):
        writer.finish()  # the thread has stopped; the error stays
    assert written == [0, 1, 2]


def test_extract_decodes_runs_the_engine_and_writes_on_separate_threads(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from cvx2_backbone.extraction import extractor as extractor_module
    from cvx2_backbone.extraction import images as images_module
    from cvx2_backbone.cli.main import main
    from cvx2_backbone.cli.commands import extract

    for index in range(6):
        Image.fromarray(np.full((32, 48, 3), index, np.uint8)).save(tmp_path / f"{index}.png")
    where: dict[str, set[str]] = {"read": set(), "infer": set(), "write": set()}

    def spy(stage, func):
        def wrapped(*args, **kwargs):
            where[stage].add(threading.current_thread().name)
            return func(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(images_module, "read_image", spy("read", images_module.read_image))
    extractor_class = extractor_module.FeatureExtractor
    monkeypatch.setattr(extractor_class, "infer", spy("infer", extractor_class.infer))
    monkeypatch.setattr(extract, "write_atomic", spy("write", extract.write_atomic))
    assert main(["extract", str(tmp_path), "-o", str(tmp_path / "out"), "--batch-size", "2", "--workers", "2"]) == 0
    assert len(list((tmp_path / "out").glob("*.safetensors"))) == 6
    assert where["infer"] == {"MainThread"} and where["write"] == {"cvx2-writer"}
    assert where["read"] and all(name.startswith("cvx2-prefetch") for name in where["read"])
